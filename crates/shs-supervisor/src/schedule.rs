//! Schedules (`[[schedule]]` in `function.toml`): the cron expression (6 fields with seconds
//! first, or the usual 5; `croner`), the IANA time zone (`chrono-tz`), the input, and what is
//! done about occurrences missed while shs was down (`catch_up`). Each occurrence is an
//! asynchronous invocation with `context.schedule`, its id derived from the function, the
//! schedule and the occurrence, so that it is stored once however often it is fired.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use shs_bus::Bus;

use crate::supervisor::StoredRequest;

/// What is done about the occurrences missed while shs was down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Nothing.
    None,
    /// The latest one missed runs once.
    Last,
}

/// One schedule of a function.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The cron expression, as written.
    pub cron_text: String,
    cron: Cron,
    /// The time zone's IANA name.
    pub timezone: String,
    tz: chrono_tz::Tz,
    /// The input of each occurrence (JSON).
    pub input: Arc<str>,
    /// What is done about missed occurrences.
    pub catch_up: CatchUp,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.cron_text == other.cron_text
            && self.timezone == other.timezone
            && self.input == other.input
            && self.catch_up == other.catch_up
    }
}

impl Schedule {
    /// A schedule from its parts as `function.toml` gives them; the error says what is wrong.
    pub fn new(
        cron: &str,
        timezone: Option<&str>,
        input: Option<serde_json::Value>,
        catch_up: Option<&str>,
    ) -> Result<Schedule, String> {
        let fields = cron.split_whitespace().count();
        if !(fields == 5 || fields == 6) {
            return Err(format!(
                "cron {cron:?} has {fields} fields: give 6 (seconds first) or 5"
            ));
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| format!("cron {cron:?} does not parse: {e}"))?;
        let timezone = timezone.unwrap_or("UTC");
        let tz: chrono_tz::Tz = timezone
            .parse()
            .map_err(|_| format!("timezone {timezone:?} is not an IANA time zone name"))?;
        let catch_up = match catch_up {
            None | Some("none") => CatchUp::None,
            Some("last") => CatchUp::Last,
            Some(other) => {
                return Err(format!(
                    "catch_up {other:?} is neither \"none\" nor \"last\""
                ));
            }
        };
        let input = input.unwrap_or_else(|| serde_json::json!({})).to_string();
        let schedule = Schedule {
            cron_text: cron.to_owned(),
            cron: parsed,
            timezone: timezone.to_owned(),
            tz,
            input: input.into(),
            catch_up,
        };
        if schedule.next_after(now()).is_none() {
            return Err(format!("cron {cron:?} never matches"));
        }
        Ok(schedule)
    }

    /// The first occurrence after `time`.
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = time.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last occurrence at or before `time`.
    pub fn last_before(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = time.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// What identifies the schedule in the store: its cron and time zone.
    pub fn key(&self) -> String {
        format!("{} {}", self.cron_text, self.timezone)
    }

    /// The id of occurrence `time` of this schedule of `function`: the same on every node.
    pub fn occurrence_id(&self, function: &str, time: DateTime<Utc>) -> String {
        let mut hash = Sha256::new();
        for part in [function, &self.key(), &time.timestamp_millis().to_string()] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Uuid::new_v8(bytes).to_string()
    }

    /// `context.schedule` of occurrence `time`.
    fn context(&self, time: DateTime<Utc>) -> Box<RawValue> {
        let context = serde_json::json!({"cron": self.cron_text, "time": rfc3339(time)});
        serde_json::value::to_raw_value(&context).unwrap_or_else(|_| {
            RawValue::from_string("{}".into()).unwrap_or_else(|_| unreachable!())
        })
    }
}

/// The time now.
fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// RFC 3339 in UTC, with milliseconds.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs the occurrences of `schedule` of `function`: each one, at its time, an asynchronous
/// invocation; first the latest one missed, with `catch_up = "last"`. Ends when aborted (the
/// function is redeployed or removed).
pub(crate) async fn run(bus: Arc<Bus>, function: String, schedule: Arc<Schedule>) {
    let invocations = match bus.invocations() {
        Ok(invocations) => invocations,
        Err(e) => {
            tracing::warn!(function, cron = schedule.cron_text, "schedule not run: {e}");
            return;
        }
    };
    let key = schedule.key();
    if schedule.catch_up == CatchUp::Last {
        match invocations.last_occurrence(&function, &key).await {
            Ok(Some(last_ms)) => {
                if let Some(missed) = schedule.last_before(now())
                    && missed.timestamp_millis() > last_ms
                {
                    tracing::info!(function, cron = schedule.cron_text, missed = %rfc3339(missed), "catching up the last occurrence missed");
                    fire(&bus, &function, &schedule, missed).await;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(function, "cannot read a schedule's last occurrence: {e}"),
        }
    }
    let mut after = now();
    loop {
        let Some(next) = schedule.next_after(after) else {
            return;
        };
        let wait = (next - now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        fire(&bus, &function, &schedule, next).await;
        after = next;
    }
}

/// Stores occurrence `time` of `schedule` as an invocation of `function`.
async fn fire(bus: &Bus, function: &str, schedule: &Schedule, time: DateTime<Utc>) {
    let Ok(invocations) = bus.invocations() else {
        return;
    };
    let input = RawValue::from_string(schedule.input.to_string())
        .unwrap_or_else(|_| RawValue::from_string("{}".into()).unwrap_or_else(|_| unreachable!()));
    let request = StoredRequest::input(input).to_raw();
    let id = schedule.occurrence_id(function, time);
    let occurrence = shs_bus::invocation::Occurrence {
        id,
        key: schedule.key(),
        time_ms: time.timestamp_millis(),
    };
    match invocations
        .accept_occurrence(function, request, schedule.context(time), occurrence)
        .await
    {
        Ok(id) => tracing::debug!(
            function,
            cron = schedule.cron_text,
            invocation = id,
            "schedule fired"
        ),
        Err(e) => tracing::error!(
            function,
            cron = schedule.cron_text,
            "a schedule's occurrence was not stored: {e}"
        ),
    }
}

/// The next occurrence of `schedule`, RFC 3339 (`next` in `GET /schedules`).
pub fn next_of(schedule: &Schedule) -> Option<String> {
    schedule.next_after(now()).map(rfc3339)
}

/// A time zone's current offset, for tests.
#[cfg(test)]
fn offset_of(tz: chrono_tz::Tz, time: DateTime<Utc>) -> i32 {
    use chrono::{Offset, TimeZone};
    tz.offset_from_utc_datetime(&time.naive_utc())
        .fix()
        .local_minus_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn six_fields_have_seconds_and_five_do_not() {
        let every_second = Schedule::new("* * * * * *", None, None, None).expect("parses");
        let t = Utc
            .with_ymd_and_hms(2026, 12, 6, 3, 0, 0)
            .single()
            .expect("time");
        assert_eq!(
            every_second.next_after(t),
            Some(t + chrono::Duration::seconds(1))
        );
        let every_five_minutes = Schedule::new("*/5 * * * *", None, None, None).expect("parses");
        assert_eq!(
            every_five_minutes.next_after(t),
            Some(t + chrono::Duration::minutes(5))
        );
    }

    #[test]
    fn a_time_zone_moves_the_occurrences() {
        let berlin =
            Schedule::new("0 0 9 * * *", Some("Europe/Berlin"), None, None).expect("parses");
        let t = Utc
            .with_ymd_and_hms(2026, 12, 6, 3, 0, 0)
            .single()
            .expect("time");
        // 09:00 in Berlin in December is 08:00 UTC.
        assert_eq!(
            berlin.next_after(t),
            Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 0).single()
        );
        assert_eq!(offset_of(berlin.tz, t), 3600);
    }

    #[test]
    fn malformed_schedules_say_what_is_wrong() {
        for (cron, tz, catch_up, why) in [
            ("* * *", None, None, "3 fields"),
            ("61 * * * * *", None, None, "does not parse"),
            ("* * * * * * * *", None, None, "8 fields"),
            ("0 0 30 2 *", None, None, "never matches"),
            ("* * * * *", Some("Mars/Olympus"), None, "IANA"),
            ("* * * * *", Some(""), None, "IANA"),
            ("* * * * *", None, Some("all"), "catch_up"),
        ] {
            let error = Schedule::new(cron, tz, None, catch_up).expect_err(cron);
            assert!(error.contains(why), "{cron}: {error}");
        }
    }

    #[test]
    fn an_occurrence_has_one_id_per_function_schedule_and_time() {
        let s = Schedule::new("* * * * * *", None, None, None).expect("parses");
        let t = Utc
            .with_ymd_and_hms(2026, 12, 6, 3, 0, 0)
            .single()
            .expect("time");
        assert_eq!(s.occurrence_id("f", t), s.occurrence_id("f", t));
        assert_ne!(s.occurrence_id("f", t), s.occurrence_id("g", t));
        assert_ne!(
            s.occurrence_id("f", t),
            s.occurrence_id("f", t + chrono::Duration::seconds(1))
        );
        assert!(uuid::Uuid::try_parse(&s.occurrence_id("f", t)).is_ok());
    }
}
