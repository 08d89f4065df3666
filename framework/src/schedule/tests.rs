//! The tick decisions with injected time: DST changes, late and missed
//! ticks, a tick left half sent.

use chrono::TimeZone as _;

use super::*;

fn schedule(cron: &str, timezone: &str, missed: Missed) -> Schedule {
    Schedule {
        name: "nightly".into(),
        cron: CronExpr::parse(cron, true).unwrap(),
        timezone: timezone.parse().unwrap(),
        stage: "lookup".into(),
        input: ScheduleInput::Body(serde_json::json!({})),
        missed,
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp_millis() as u64
}

/// A keeper that looks every `every_ms` from `from` to `to`, applying
/// each step as the keeper does; returns the ticks it fired.
fn run(s: &Schedule, mut last: Option<Tick>, from: u64, to: u64, every_ms: u64) -> Vec<u64> {
    let mut fired = Vec::new();
    let mut now = from;
    while now <= to {
        for _ in 0..100 {
            match s.step(last, now) {
                Step::Arm(at) | Step::Skip(at) => {
                    last = Some(Tick::latest(
                        last,
                        Tick {
                            at_ms: at,
                            phase: Phase::Armed,
                        },
                    ))
                }
                Step::Fire(at) | Step::Finish(at) => {
                    fired.push(at);
                    last = Some(Tick {
                        at_ms: at,
                        phase: Phase::Fired,
                    });
                }
                Step::Wait(_) => break,
            }
        }
        now += every_ms;
    }
    fired
}

#[test]
fn a_daily_time_in_the_spring_gap_fires_once_after_it() {
    // Europe/Berlin skips 02:00-03:00 on 2026-03-29.
    let s = schedule("30 2 * * *", "Europe/Berlin", Missed::Once);
    let fired = run(
        &s,
        None,
        utc(2026, 3, 27, 12, 0, 0),
        utc(2026, 3, 31, 12, 0, 0),
        20_000,
    );
    let text: Vec<String> = fired.iter().map(|t| local_text(*t, s.timezone)).collect();
    assert_eq!(
        text,
        [
            "2026-03-28 02:30:00 CET",
            "2026-03-29 03:00:00 CEST",
            "2026-03-30 02:30:00 CEST",
            "2026-03-31 02:30:00 CEST"
        ]
    );
}

#[test]
fn a_daily_time_in_the_autumn_overlap_fires_once() {
    // Europe/Berlin runs 02:00-03:00 twice on 2026-10-25.
    let s = schedule("30 2 * * *", "Europe/Berlin", Missed::Once);
    let fired = run(
        &s,
        None,
        utc(2026, 10, 23, 12, 0, 0),
        utc(2026, 10, 27, 12, 0, 0),
        20_000,
    );
    let text: Vec<String> = fired.iter().map(|t| local_text(*t, s.timezone)).collect();
    assert_eq!(
        text,
        [
            "2026-10-24 02:30:00 CEST",
            "2026-10-25 02:30:00 CEST",
            "2026-10-26 02:30:00 CET",
            "2026-10-27 02:30:00 CET"
        ]
    );
}

#[test]
fn an_hourly_schedule_fires_every_real_hour_through_both_changes() {
    let s = schedule("@hourly", "America/New_York", Missed::Once);
    // 2026-03-08: 23 hours in New York; 2026-11-01: 25.
    let spring = run(
        &s,
        None,
        utc(2026, 3, 8, 4, 30, 0),
        utc(2026, 3, 9, 3, 30, 0),
        30_000,
    );
    assert_eq!(spring.len(), 23, "{spring:?}");
    let autumn = run(
        &s,
        None,
        utc(2026, 11, 1, 3, 30, 0),
        utc(2026, 11, 2, 4, 30, 0),
        30_000,
    );
    assert_eq!(autumn.len(), 25, "{autumn:?}");
    for pair in spring.windows(2).chain(autumn.windows(2)) {
        assert_eq!(pair[1] - pair[0], 3_600_000, "{pair:?}");
    }
}

#[test]
fn a_new_schedule_arms_at_now_and_fires_nothing_before_it() {
    let s = schedule("0 3 * * *", "UTC", Missed::Once);
    let now = utc(2026, 12, 6, 3, 0, 30);
    assert_eq!(s.step(None, now), Step::Arm(now));
    let armed = Some(Tick {
        at_ms: now,
        phase: Phase::Armed,
    });
    assert_eq!(
        s.step(armed, now),
        Step::Wait(Some(utc(2026, 12, 7, 3, 0, 0)))
    );
}

#[test]
fn ticks_a_little_late_all_fire_in_order() {
    // A keeper taking over a few seconds after its predecessor died.
    let s = schedule("* * * * * *", "UTC", Missed::Skip);
    let t0 = utc(2026, 12, 6, 4, 0, 0);
    let fired = run(
        &s,
        Some(Tick {
            at_ms: t0,
            phase: Phase::Fired,
        }),
        t0 + 5_400,
        t0 + 5_400,
        1,
    );
    assert_eq!(
        fired,
        [t0 + 1000, t0 + 2000, t0 + 3000, t0 + 4000, t0 + 5000]
    );
}

#[test]
fn after_ten_minutes_down_once_fires_one_catch_up_tick_and_skip_none() {
    let tick = utc(2026, 12, 6, 3, 0, 0);
    let before = Some(Tick {
        at_ms: tick - 86_400_000,
        phase: Phase::Fired,
    });
    let now = tick + 10 * 60_000;
    let once = schedule("0 3 * * *", "UTC", Missed::Once);
    assert_eq!(once.step(before, now), Step::Fire(tick));
    assert_eq!(run(&once, before, now, now + 60_000, 1000), [tick]);
    let skip = schedule("0 3 * * *", "UTC", Missed::Skip);
    assert_eq!(skip.step(before, now), Step::Skip(tick));
    assert!(run(&skip, before, now, now + 60_000, 1000).is_empty());
    // An every-minute schedule down ten minutes: the tick of the last
    // minute is merely late and fires; the nine before it were missed and
    // are passed over, with `once` (the late tick is its catch-up) as with
    // `skip`.
    let last = Some(Tick {
        at_ms: tick,
        phase: Phase::Fired,
    });
    let back = tick + 10 * 60_000 + 20_000;
    for missed in [Missed::Once, Missed::Skip] {
        let minutely = schedule("* * * * *", "UTC", missed);
        assert_eq!(minutely.step(last, back), Step::Skip(tick + 9 * 60_000));
        assert_eq!(run(&minutely, last, back, back, 1), [tick + 10 * 60_000]);
    }
}

#[test]
fn a_tick_left_firing_is_finished_with_the_same_tick() {
    let s = schedule("0 3 * * *", "UTC", Missed::Skip);
    let tick = utc(2026, 12, 6, 3, 0, 0);
    let firing = Some(Tick {
        at_ms: tick,
        phase: Phase::Firing,
    });
    // However long ago: what went out of it must be whole.
    assert_eq!(s.step(firing, tick + 86_400_000 * 3), Step::Finish(tick));
    assert_eq!(s.job_id(tick), "nightly.2026-12-06T03:00:00Z");
}

#[test]
fn records_read_back_and_only_move_forward() {
    let tick = Tick {
        at_ms: 1_765_000_800_000,
        phase: Phase::Firing,
    };
    let id = tick.record_id("nightly-2");
    assert_eq!(id, "schedule-tick.firing.1765000800000.nightly-2");
    assert_eq!(Tick::from_record_id(&id), Some(("nightly-2".into(), tick)));
    assert_eq!(Tick::from_record_id("schedule-tick.firing.x.n"), None);
    assert_eq!(Tick::from_record_id("schedule-tick.fired.1."), None);
    assert_eq!(Tick::from_record_id("keeper-alive-1"), None);
    let fired = Tick {
        phase: Phase::Fired,
        ..tick
    };
    assert_eq!(Tick::latest(Some(fired), tick), fired);
    assert_eq!(Tick::latest(Some(tick), fired), fired);
    let later = Tick {
        at_ms: tick.at_ms + 1000,
        phase: Phase::Armed,
    };
    assert_eq!(Tick::latest(Some(fired), later), later);
}

#[test]
fn expressions_have_five_fields_or_a_nickname() {
    for good in [
        "0 3 * * *",
        "*/15 * * * MON-FRI",
        "@daily",
        "@HOURLY",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
    ] {
        assert!(CronExpr::parse(good, false).is_ok(), "{good}");
    }
    for (bad, says) in [
        ("0 3 * *", "has 4 fields"),
        ("0 0 3 * * *", "has 6 fields"),
        ("0 3 * * * 2026", "has 6 fields"),
        ("61 * * * *", "is not a cron expression"),
        ("@reboot", "`@reboot` has no tick"),
        ("@often", "is not a cron expression"),
        ("", "has 0 fields"),
    ] {
        let error = CronExpr::parse(bad, false).unwrap_err();
        assert!(error.contains(says), "{bad}: {error}");
    }
    // Seconds only where a test asked for them.
    assert!(CronExpr::parse("* * * * * *", true).is_ok());
}

#[test]
fn an_expression_that_never_ticks_has_no_next_tick() {
    let started = std::time::Instant::now();
    let never = schedule("0 0 30 2 *", "UTC", Missed::Once);
    assert_eq!(never.next_after(utc(2026, 12, 6, 0, 0, 0)), None);
    assert_eq!(never.last_before(utc(2026, 12, 6, 0, 0, 0)), None);
    eprintln!("searched in {:?}", started.elapsed());
    let leap = schedule("0 0 29 2 *", "UTC", Missed::Once);
    assert_eq!(
        leap.next_after(utc(2026, 12, 6, 0, 0, 0)),
        Some(utc(2028, 2, 29, 0, 0, 0))
    );
}
