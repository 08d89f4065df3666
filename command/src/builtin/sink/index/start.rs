//! Starting the index's log: reading it on start ([`Index::read_log`]),
//! creating it when there is none ([`Index::begin`]), starting it over
//! after a merge ([`Index::restart_log`]).

use std::{fs::OpenOptions, io::Read, path::PathBuf};

use tracing::warn;

use super::{Found, Index, log};
use crate::builtin::sink::disk::{self, fail};

impl Index {
    /// Reads the log's records into memory; drops a record torn by a
    /// crash, and a whole log already merged into the sorted file.
    pub(super) fn read_log(&mut self) -> Result<Found, String> {
        let path = self.log_path.clone();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| fail(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| fail(&path, e))?;
        self.log = Some(file);
        let header = match log::start(&bytes) {
            log::Start::Damaged => {
                return Err(fail(
                    &path,
                    "not a sink log (its header is damaged); the sink does not start rather than guess what it recorded. Keep a copy; moving it aside starts the sink, which then keeps every line of the data file, counting those of unknown id as written",
                ));
            }
            // Emptied while starting over after a merge: `.keys` holds all.
            log::Start::Empty if self.sorted.file.is_some() => {
                self.restart_log()?;
                return Ok(Found::Log);
            }
            log::Start::Empty => return Ok(Found::NoLog),
            log::Start::Header(header) => header,
        };
        if header.generation < self.sorted.generation {
            self.restart_log()?; // merged whole
            return Ok(Found::Log);
        }
        let read = log::read(header.version, &bytes, header.version.header_len()).map_err(|damaged| {
            fail(
                &path,
                format!(
                    "the record at byte {} is damaged and more follows it: not the torn end a crash leaves. The sink does not start rather than drop the records after it and cut their lines off the data file. Keep a copy; moving it aside starts the sink, which then keeps every line of the data file, counting those of unknown id as written",
                    damaged.at
                ),
            )
        })?;
        self.version = header.version;
        self.generation = header.generation;
        self.data_len = header.base_len.unwrap_or(self.sorted.data_len);
        for (keys, data_len) in read.records {
            self.recent.extend(keys);
            self.data_len = data_len;
        }
        self.log_len = read.end as u64;
        if read.torn {
            warn!(
                "{}: dropped a record torn by a crash at byte {} (its batch was not acknowledged)",
                path.display(),
                read.end
            );
            self.unsettled = true;
            self.settle()?;
        }
        if header.generation == self.sorted.generation && !self.recent.is_empty() {
            // Merged (in part) already: `.keys` covers at least what it
            // says, and merging again keeps each hash once.
            self.data_len = self.data_len.max(self.sorted.data_len);
            if let Err(error) = self.compact() {
                warn!("the sink's index could not merge its log: {error}");
            }
        }
        Ok(Found::Log)
    }

    /// Starts the log when there was none ([`Found::NoLog`]): the data file
    /// holds `base_len` bytes, written. Created whole or not at all.
    pub fn begin(&mut self, base_len: u64) -> Result<(), String> {
        let aside = PathBuf::from(format!("{}.new", self.log_path.display()));
        let header = log::header(self.generation, base_len);
        let created = (|| {
            let file = disk::create(&aside)?;
            disk::write_at(&file, &aside, 0, &header)?;
            disk::sync(&file, &aside)?;
            disk::rename(&aside, &self.log_path)?;
            disk::sync_dir(&self.log_path)?;
            Ok::<_, std::io::Error>(file)
        })();
        let file = created.map_err(|e| {
            let _ = disk::remove(&aside);
            fail(&self.log_path, format!("cannot create it: {e}"))
        })?;
        self.log = Some(file);
        self.version = log::Version::V2;
        self.log_len = header.len() as u64;
        self.data_len = base_len;
        self.unsettled = false;
        Ok(())
    }

    /// Empties the log and gives it the current generation; until this
    /// succeeds, nothing is recorded.
    pub(super) fn restart_log(&mut self) -> Result<(), String> {
        let path = &self.log_path;
        let log = self.log.as_ref().ok_or_else(|| fail(path, "no log"))?;
        let header = log::header(self.generation, self.data_len);
        self.log_len = 0;
        (|| {
            disk::set_len(log, path, 0)?;
            disk::write_at(log, path, 0, &header)?;
            disk::sync(log, path)
        })()
        .map_err(|e| fail(path, e))?;
        self.log_len = header.len() as u64;
        self.version = log::Version::V2;
        self.recent.clear();
        self.next_compact = self.compact_at;
        self.unsettled = false;
        Ok(())
    }
}
