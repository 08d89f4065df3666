//! This box's copy of a pipeline's job records: an embedded database
//! (`redb`) with each job's record and the offset of the next event of the
//! job stream to fold in, so that a tracker that starts again goes on from
//! there instead of reading the stream from its start.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use warren::{
    jobs::{Event, JobRecord, JobState},
    schedule::{Phase, Tick},
};

/// Job id -> record ([`JobRecord::to_bytes`]).
const JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("jobs");
/// `next_offset`: the stream offset of the first event not folded in;
/// `last_print`: the print of the stream message before it (0: unknown);
/// `pruned_at_ms`; `jobs.{state}`: how many records are in each state;
/// `gap_from`, `gap_to`: the offsets of the last gap (events the stream's
/// retention dropped before this store read them).
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// Failed jobs -> when their record last changed (for the list of recent
/// failures).
const FAILED: TableDefinition<'_, &str, u64> = TableDefinition::new("failed");
/// Jobs this store cannot answer for -> the end offset of the gap that
/// may hold some of their events.
const STALE: TableDefinition<'_, &str, u64> = TableDefinition::new("stale");
/// Schedule -> the last tick recorded for it on the job stream (the tick's
/// ms, big-endian, then its phase: 0 armed, 1 firing, 2 fired).
const TICKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("ticks");

/// The states a record is counted in (`unknown` is no record).
pub const COUNTED: [JobState; 7] = [
    JobState::Queued,
    JobState::Scheduled,
    JobState::Running,
    JobState::Retrying,
    JobState::Done,
    JobState::Failed,
    JobState::Cancelled,
];

/// A record's state for the counts: as of its own events, whatever its age.
fn counted_state(record: &JobRecord) -> JobState {
    record.state(record.last_ms(), u64::MAX)
}

fn count_key(state: JobState) -> String {
    let name = serde_json::to_value(state).expect("a state is JSON");
    format!("jobs.{}", name.as_str().unwrap_or("?"))
}

/// Where this box keeps a store of `pipeline`'s job records for `user`
/// (`jobs` for `warren job`, `keeper` for the job keeper): each process
/// that reads the stream has its own, in `.warren/` of the directory it
/// runs in.
pub fn path(pipeline: &str, user: &str) -> PathBuf {
    Path::new(".warren").join(format!("{pipeline}.{user}.redb"))
}

/// Longest time between two commits synced to disk. The commits between
/// are not (redb's `Durability::None`): a crash takes the store back to the
/// last synced one, records and offset together, and the tracker reads
/// those events again, which changes nothing (sets, not counters).
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// For tests: `WARREN_TEST_STORE_PAUSE_MS` makes every fold wait that
/// long first, as a write does on a disk under heavy I/O.
fn slow_disk() {
    static PAUSE: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        std::env::var("WARREN_TEST_STORE_PAUSE_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(pause) = pause {
        std::thread::sleep(*pause);
    }
}

/// The open store of one pipeline.
pub struct Store {
    db: Database,
    path: PathBuf,
    synced_at: std::sync::Mutex<std::time::Instant>,
}

impl Store {
    /// Opens (or creates) the store at `path`; `Ok(None)` while another
    /// process holds it.
    pub fn open(path: &Path) -> Result<Option<Store>, String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Ok(None),
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        Ok(Some(Store {
            db,
            path: path.to_path_buf(),
            synced_at: std::sync::Mutex::new(std::time::Instant::now()),
        }))
    }

    fn fail(&self, error: impl std::fmt::Display) -> String {
        format!("{}: {error}", self.path.display())
    }

    /// The offset of the first event not folded in yet.
    pub fn next_offset(&self) -> Result<u64, String> {
        self.meta("next_offset")
    }

    /// The print of the stream message before [`Store::next_offset`] (0:
    /// unknown).
    pub fn last_print(&self) -> Result<u64, String> {
        self.meta("last_print")
    }

    /// Goes on reading the stream at `offset`, with no print of what came
    /// before (a new stream, or one read on after a gap). Records stay.
    pub fn restart(&self, offset: u64) -> Result<(), String> {
        let write = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut meta = write.open_table(META).map_err(|e| self.fail(e))?;
            meta.insert("next_offset", offset)
                .map_err(|e| self.fail(e))?;
            meta.insert("last_print", 0).map_err(|e| self.fail(e))?;
        }
        write.commit().map_err(|e| self.fail(e))
    }

    /// Notes that the events of offsets `gap` were dropped before this
    /// store read them; returns the jobs it cannot answer for: those not
    /// settled by the events it has (some of theirs may be in the gap). A
    /// job entirely in the gap is unknown here.
    pub fn note_gap(&self, gap: std::ops::Range<u64>) -> Result<Vec<String>, String> {
        let mut open = Vec::new();
        self.each(|job, record| {
            if !counted_state(&record).is_settled() {
                open.push(job.to_string());
            }
        })?;
        let write = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut stale = write.open_table(STALE).map_err(|e| self.fail(e))?;
            for job in &open {
                stale
                    .insert(job.as_str(), gap.end)
                    .map_err(|e| self.fail(e))?;
            }
            let mut meta = write.open_table(META).map_err(|e| self.fail(e))?;
            meta.insert("gap_from", gap.start)
                .map_err(|e| self.fail(e))?;
            meta.insert("gap_to", gap.end).map_err(|e| self.fail(e))?;
        }
        write.commit().map_err(|e| self.fail(e))?;
        Ok(open)
    }

    /// Whether `job` was open when this store found a gap (some of its
    /// events may be missing here).
    pub fn stale(&self, job: &str) -> Result<bool, String> {
        let read = self.db.begin_read().map_err(|e| self.fail(e))?;
        match read.open_table(STALE) {
            Ok(stale) => Ok(stale.get(job).map_err(|e| self.fail(e))?.is_some()),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// The offsets of the last gap, if this store ever had one.
    pub fn gap(&self) -> Result<Option<std::ops::Range<u64>>, String> {
        let to = self.meta("gap_to")?;
        Ok((to > 0)
            .then(|| self.meta("gap_from"))
            .transpose()?
            .map(|from| from..to))
    }

    /// A value of the `meta` table (0 when there is none).
    fn meta(&self, key: &str) -> Result<u64, String> {
        let read = self.db.begin_read().map_err(|e| self.fail(e))?;
        let meta = match read.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(error) => return Err(self.fail(error)),
        };
        Ok(meta
            .get(key)
            .map_err(|e| self.fail(e))?
            .map_or(0, |value| value.value()))
    }

    /// Counts one record more (`up`) or less in `state`.
    fn count(
        &self,
        meta: &mut redb::Table<'_, &'static str, u64>,
        state: JobState,
        up: bool,
    ) -> Result<(), String> {
        let key = count_key(state);
        let n = meta
            .get(key.as_str())
            .map_err(|e| self.fail(e))?
            .map_or(0, |n| n.value());
        let n = if up { n + 1 } else { n.saturating_sub(1) };
        meta.insert(key.as_str(), n).map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// The record of `job`, if any event of it was folded in.
    pub fn get(&self, job: &str) -> Result<Option<JobRecord>, String> {
        let read = self.db.begin_read().map_err(|e| self.fail(e))?;
        let jobs = match read.open_table(JOBS) {
            Ok(jobs) => jobs,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(self.fail(error)),
        };
        match jobs.get(job).map_err(|e| self.fail(e))? {
            Some(bytes) => JobRecord::from_bytes(bytes.value())
                .map(Some)
                .map_err(|e| self.fail(e)),
            None => Ok(None),
        }
    }

    /// Every record, in job id order, to `each` (stopping at its first
    /// error): for the job keeper, which looks at every job once when it
    /// takes over.
    pub fn each(&self, mut each: impl FnMut(&str, JobRecord)) -> Result<(), String> {
        let read = self.db.begin_read().map_err(|e| self.fail(e))?;
        let jobs = match read.open_table(JOBS) {
            Ok(jobs) => jobs,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(error) => return Err(self.fail(error)),
        };
        for row in jobs.iter().map_err(|e| self.fail(e))? {
            let (job, bytes) = row.map_err(|e| self.fail(e))?;
            each(
                job.value(),
                JobRecord::from_bytes(bytes.value()).map_err(|e| self.fail(e))?,
            );
        }
        Ok(())
    }

    /// Folds `events` in, in one transaction, with the offset that follows
    /// them and the print of the stream message they ended with: a crash
    /// keeps all of them or none. Returns the records that changed, as
    /// they are now.
    pub fn fold(
        &self,
        events: &[Event],
        next_offset: u64,
        last_print: u64,
    ) -> Result<Vec<(String, JobRecord)>, String> {
        slow_disk();
        let mut write = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut synced_at = self.synced_at.lock().expect("synced_at");
            if synced_at.elapsed() < SYNC_EVERY {
                write
                    .set_durability(redb::Durability::None)
                    .map_err(|e| self.fail(e))?;
            } else {
                *synced_at = std::time::Instant::now();
            }
        }
        let changed;
        {
            let mut jobs = write.open_table(JOBS).map_err(|e| self.fail(e))?;
            let mut records: std::collections::HashMap<&str, JobRecord> =
                std::collections::HashMap::new();
            let mut before: std::collections::HashMap<&str, Option<JobState>> =
                std::collections::HashMap::new();
            for event in events {
                if !records.contains_key(event.job.as_str()) {
                    let known = match jobs.get(event.job.as_str()).map_err(|e| self.fail(e))? {
                        Some(bytes) => {
                            JobRecord::from_bytes(bytes.value()).map_err(|e| self.fail(e))?
                        }
                        None => JobRecord::default(),
                    };
                    let state = (known != JobRecord::default()).then(|| counted_state(&known));
                    before.insert(event.job.as_str(), state);
                    records.insert(event.job.as_str(), known);
                }
                records
                    .get_mut(event.job.as_str())
                    .expect("inserted above")
                    .apply(event);
            }
            for (job, record) in &records {
                jobs.insert(*job, record.to_bytes().as_slice())
                    .map_err(|e| self.fail(e))?;
            }
            let mut meta = write.open_table(META).map_err(|e| self.fail(e))?;
            let mut failed = write.open_table(FAILED).map_err(|e| self.fail(e))?;
            for (job, record) in &records {
                let now = counted_state(record);
                let was = before.get(job).copied().flatten();
                if was == Some(now) {
                    continue;
                }
                if let Some(was) = was {
                    self.count(&mut meta, was, false)?;
                }
                self.count(&mut meta, now, true)?;
                if now == JobState::Failed {
                    failed
                        .insert(*job, record.last_ms())
                        .map_err(|e| self.fail(e))?;
                } else if was == Some(JobState::Failed) {
                    failed.remove(*job).map_err(|e| self.fail(e))?;
                }
            }
            changed = records
                .into_iter()
                .map(|(job, record)| (job.to_string(), record))
                .collect();
            meta.insert("next_offset", next_offset)
                .map_err(|e| self.fail(e))?;
            meta.insert("last_print", last_print)
                .map_err(|e| self.fail(e))?;
        }
        write.commit().map_err(|e| self.fail(e))?;
        Ok(changed)
    }
}

impl Store {
    /// How many records are in each state (unknown ones aside), as of
    /// their own events: a record older than `jobs.keep` counts until the
    /// hourly prune.
    pub fn counts(&self) -> Result<Vec<(JobState, u64)>, String> {
        COUNTED
            .iter()
            .map(|state| Ok((*state, self.meta(&count_key(*state))?)))
            .collect()
    }

    /// The `limit` failed jobs that changed last, newest first.
    pub fn failed(&self, limit: usize) -> Result<Vec<String>, String> {
        let read = self.db.begin_read().map_err(|e| self.fail(e))?;
        let failed = match read.open_table(FAILED) {
            Ok(failed) => failed,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(self.fail(error)),
        };
        let mut all = Vec::new();
        for row in failed.iter().map_err(|e| self.fail(e))? {
            let (job, at) = row.map_err(|e| self.fail(e))?;
            all.push((at.value(), job.value().to_string()));
        }
        all.sort_unstable_by(|a, b| b.cmp(a));
        Ok(all.into_iter().take(limit).map(|(_, job)| job).collect())
    }

    /// Syncs what was folded in to disk (an empty commit that is synced
    /// makes the unsynced ones before it durable too).
    pub fn sync(&self) -> Result<(), String> {
        let write = self.db.begin_write().map_err(|e| self.fail(e))?;
        write.commit().map_err(|e| self.fail(e))?;
        *self.synced_at.lock().expect("synced_at") = std::time::Instant::now();
        Ok(())
    }

    /// Forgets the records whose last change is more than `keep_ms` before
    /// `now_ms` (they answer `unknown` anyway), at most once an hour;
    /// returns how many went.
    pub fn prune(&self, now_ms: u64, keep_ms: u64) -> Result<usize, String> {
        const EVERY_MS: u64 = 3600 * 1000;
        // Asked often (each turn of a follower): a read says whether it is
        // due before the write lock is taken.
        if now_ms.saturating_sub(self.meta("pruned_at_ms")?) < EVERY_MS {
            return Ok(0);
        }
        let write = self.db.begin_write().map_err(|e| self.fail(e))?;
        let pruned = {
            let mut meta = write.open_table(META).map_err(|e| self.fail(e))?;
            meta.insert("pruned_at_ms", now_ms)
                .map_err(|e| self.fail(e))?;
            let mut jobs = write.open_table(JOBS).map_err(|e| self.fail(e))?;
            let mut gone = Vec::new();
            for row in jobs.iter().map_err(|e| self.fail(e))? {
                let (job, bytes) = row.map_err(|e| self.fail(e))?;
                let state = JobRecord::from_bytes(bytes.value())
                    .ok()
                    .filter(|r| now_ms.saturating_sub(r.last_ms()) > keep_ms)
                    .map(|r| counted_state(&r));
                if let Some(state) = state {
                    gone.push((job.value().to_string(), state));
                }
            }
            let mut failed = write.open_table(FAILED).map_err(|e| self.fail(e))?;
            let mut stale = write.open_table(STALE).map_err(|e| self.fail(e))?;
            for (job, state) in &gone {
                jobs.remove(job.as_str()).map_err(|e| self.fail(e))?;
                failed.remove(job.as_str()).map_err(|e| self.fail(e))?;
                stale.remove(job.as_str()).map_err(|e| self.fail(e))?;
                self.count(&mut meta, *state, false)?;
            }
            gone.len()
        };
        write.commit().map_err(|e| self.fail(e))?;
        Ok(pruned)
    }
}

/// The last ticks of the schedules, as recorded on the job stream.
impl Store {
    /// Keeps the later of each schedule's recorded tick and the one known
    /// ([`Tick::latest`]): reading a record again changes nothing.
    pub fn note_ticks(&self, ticks: &[(String, Tick)]) -> Result<(), String> {
        if ticks.is_empty() {
            return Ok(());
        }
        let write = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = write.open_table(TICKS).map_err(|e| self.fail(e))?;
            for (schedule, tick) in ticks {
                let known = table
                    .get(schedule.as_str())
                    .map_err(|e| self.fail(e))?
                    .and_then(|bytes| tick_from_bytes(bytes.value()));
                let latest = Tick::latest(known, *tick);
                table
                    .insert(schedule.as_str(), tick_bytes(latest).as_slice())
                    .map_err(|e| self.fail(e))?;
            }
        }
        write.commit().map_err(|e| self.fail(e))
    }

    /// Every schedule's last recorded tick.
    pub fn ticks(&self) -> Result<std::collections::BTreeMap<String, Tick>, String> {
        let read = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = match read.open_table(TICKS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Default::default()),
            Err(error) => return Err(self.fail(error)),
        };
        let mut ticks = std::collections::BTreeMap::new();
        for row in table.iter().map_err(|e| self.fail(e))? {
            let (schedule, bytes) = row.map_err(|e| self.fail(e))?;
            if let Some(tick) = tick_from_bytes(bytes.value()) {
                ticks.insert(schedule.value().to_string(), tick);
            }
        }
        Ok(ticks)
    }
}

fn tick_bytes(tick: Tick) -> [u8; 9] {
    let mut bytes = [0; 9];
    bytes[..8].copy_from_slice(&tick.at_ms.to_be_bytes());
    bytes[8] = match tick.phase {
        Phase::Armed => 0,
        Phase::Firing => 1,
        Phase::Fired => 2,
    };
    bytes
}

fn tick_from_bytes(bytes: &[u8]) -> Option<Tick> {
    let at_ms = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let phase = match bytes.get(8)? {
        0 => Phase::Armed,
        1 => Phase::Firing,
        2 => Phase::Fired,
        _ => return None,
    };
    Some(Tick { at_ms, phase })
}

#[cfg(test)]
mod tests {
    use warren::jobs::{JobState, What};

    use super::*;

    fn event(job: &str, id: &str, what: What) -> Event {
        event_at(job, id, what, 1)
    }

    fn event_at(job: &str, id: &str, what: What, at_ms: u64) -> Event {
        Event {
            job: job.into(),
            id: id.into(),
            stage: "a".into(),
            what,
            emitted: Vec::new(),
            callback: None,
            trace: None,
            at_ms,
        }
    }

    #[test]
    fn records_older_than_keep_are_pruned_at_most_hourly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("jobs.redb")).unwrap().unwrap();
        let hour = 3600 * 1000;
        store
            .fold(
                &[
                    event_at("old", "old", What::Done, 10 * hour),
                    event_at("new", "new", What::Done, 20 * hour),
                ],
                2,
                1,
            )
            .unwrap();
        // keep = 5 h, now = 21 h: `old` (11 h ago) goes, `new` stays.
        assert_eq!(store.prune(21 * hour, 5 * hour).unwrap(), 1);
        assert!(store.get("old").unwrap().is_none());
        assert!(store.get("new").unwrap().is_some());
        // Not again within the hour, even when due by age.
        assert_eq!(store.prune(21 * hour + 10, 0).unwrap(), 0);
        assert!(store.get("new").unwrap().is_some());
        assert_eq!(store.next_offset().unwrap(), 2);
    }

    #[test]
    fn records_are_counted_by_state_and_failures_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("jobs.redb")).unwrap().unwrap();
        let dead = || What::Dead {
            reason: "gone".into(),
        };
        store
            .fold(
                &[
                    event("a", "a", What::Sent),
                    event("b", "b", What::Sent),
                    event_at("c", "c", dead(), 5),
                ],
                3,
                1,
            )
            .unwrap();
        let count = |state| {
            store
                .counts()
                .unwrap()
                .into_iter()
                .find(|(s, _)| *s == state)
                .unwrap()
                .1
        };
        assert_eq!(count(JobState::Queued), 2);
        assert_eq!(count(JobState::Failed), 1);
        // The same events again change nothing; a job moves between states.
        store
            .fold(
                &[event("a", "a", What::Sent), event("a", "a", What::Done)],
                5,
                1,
            )
            .unwrap();
        store.fold(&[event_at("b", "b", dead(), 9)], 6, 1).unwrap();
        assert_eq!(count(JobState::Queued), 0);
        assert_eq!(count(JobState::Done), 1);
        assert_eq!(count(JobState::Failed), 2);
        assert_eq!(store.failed(10).unwrap(), ["b", "c"]);
        assert_eq!(store.failed(1).unwrap(), ["b"]);
        // A replayed dead letter that succeeds leaves the failures.
        store
            .fold(&[event_at("c", "c", What::Done, 10)], 7, 1)
            .unwrap();
        assert_eq!(store.failed(10).unwrap(), ["b"]);
        assert_eq!(count(JobState::Done), 2);
        // Pruned records leave the counts.
        let hour = 3600 * 1000;
        assert_eq!(store.prune(2 * hour, hour).unwrap(), 3);
        assert!(store.counts().unwrap().iter().all(|(_, n)| *n == 0));
        assert!(store.failed(10).unwrap().is_empty());
    }

    #[test]
    fn records_and_the_offset_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        {
            let store = Store::open(&path).unwrap().unwrap();
            assert_eq!(store.next_offset().unwrap(), 0);
            assert!(store.get("j1").unwrap().is_none());
            store
                .fold(
                    &[event("j1", "j1", What::Sent), event("j2", "j2", What::Done)],
                    2,
                    1,
                )
                .unwrap();
            store.fold(&[event("j1", "j1", What::Done)], 3, 1).unwrap();
        }
        let store = Store::open(&path).unwrap().unwrap();
        assert_eq!(store.next_offset().unwrap(), 3);
        let j1 = store.get("j1").unwrap().unwrap();
        assert_eq!(j1.state(1, 1000), JobState::Done);
        assert!(store.get("j3").unwrap().is_none());
        assert_eq!(store.last_print().unwrap(), 1);
    }

    #[test]
    fn a_gap_names_the_open_jobs_and_a_restart_keeps_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("jobs.redb")).unwrap().unwrap();
        store
            .fold(
                &[
                    event("open", "open", What::Sent),
                    event("done", "done", What::Done),
                ],
                5,
                77,
            )
            .unwrap();
        assert_eq!(store.gap().unwrap(), None);
        assert_eq!(store.note_gap(5..9).unwrap(), ["open"]);
        store.restart(9).unwrap();
        assert_eq!(store.next_offset().unwrap(), 9);
        assert_eq!(store.last_print().unwrap(), 0);
        assert_eq!(store.gap().unwrap(), Some(5..9));
        assert!(store.stale("open").unwrap());
        assert!(!store.stale("done").unwrap());
        assert!(store.get("done").unwrap().is_some());
    }

    #[test]
    fn a_schedule_keeps_its_latest_tick_however_often_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap().unwrap();
        let firing = Tick {
            at_ms: 2000,
            phase: Phase::Firing,
        };
        let fired = Tick {
            at_ms: 2000,
            phase: Phase::Fired,
        };
        let armed = Tick {
            at_ms: 1000,
            phase: Phase::Armed,
        };
        store
            .note_ticks(&[
                ("a".into(), armed),
                ("a".into(), firing),
                ("b".into(), armed),
            ])
            .unwrap();
        store.note_ticks(&[("a".into(), fired)]).unwrap();
        // Read again from an earlier offset: nothing goes back.
        store
            .note_ticks(&[("a".into(), armed), ("a".into(), firing)])
            .unwrap();
        let ticks = store.ticks().unwrap();
        assert_eq!(ticks.get("a"), Some(&fired));
        assert_eq!(ticks.get("b"), Some(&armed));
        assert_eq!(ticks.len(), 2);
    }
}
