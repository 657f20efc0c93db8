//! The attendance report of a meeting, from its ledger: per invitation the first join, last
//! leave, connected time (overlapping connections merged), reconnects and a status; rates per
//! unit, region and tier. Pure.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttendanceStatus {
    Present,
    /// Joined more than the allowed minutes after the start.
    Late,
    /// Left for good more than the allowed minutes before the end.
    LeftEarly,
    Absent,
    /// Declined with a reason (请假).
    Excused,
}

impl AttendanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttendanceStatus::Present => "present",
            AttendanceStatus::Late => "late",
            AttendanceStatus::LeftEarly => "left_early",
            AttendanceStatus::Absent => "absent",
            AttendanceStatus::Excused => "excused",
        }
    }

    pub fn label_zh(self) -> &'static str {
        match self {
            AttendanceStatus::Present => "出席",
            AttendanceStatus::Late => "迟到",
            AttendanceStatus::LeftEarly => "早退",
            AttendanceStatus::Absent => "缺席",
            AttendanceStatus::Excused => "请假",
        }
    }

    /// Was there (on time or not).
    pub fn attended(self) -> bool {
        matches!(
            self,
            AttendanceStatus::Present | AttendanceStatus::Late | AttendanceStatus::LeftEarly
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Joining later than this after the start is late.
    pub late_after: Duration,
    /// Leaving for good earlier than this before the end is leaving early.
    pub early_before: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            late_after: Duration::minutes(5),
            early_before: Duration::minutes(10),
        }
    }
}

/// One connection: when it joined, and when it ended (`None`: still connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub joined: DateTime<Utc>,
    pub ended: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attendance {
    pub first_join: Option<DateTime<Utc>>,
    pub last_leave: Option<DateTime<Utc>>,
    /// Time connected within the meeting, overlapping connections counted once.
    pub connected_seconds: i64,
    /// Connections after the first.
    pub reconnects: i64,
    pub status: AttendanceStatus,
}

/// The attendance of one invitation in a meeting that ran from `start` to `end`; connections
/// still open count until `end`.
pub fn attendance(
    spans: &[Span],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    declined: bool,
    rules: Rules,
) -> Attendance {
    let mut clipped: Vec<(DateTime<Utc>, DateTime<Utc>)> = spans
        .iter()
        .map(|s| (s.joined.max(start), s.ended.unwrap_or(end).min(end)))
        .filter(|(a, b)| a < b)
        .collect();
    clipped.sort();
    let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (a, b) in clipped {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let connected: i64 = merged.iter().map(|(a, b)| (*b - *a).num_seconds()).sum();
    let first_join = spans.iter().map(|s| s.joined).min();
    let last_leave = spans.iter().map(|s| s.ended.unwrap_or(end)).max();
    let status = match (first_join, last_leave) {
        _ if merged.is_empty() && declined => AttendanceStatus::Excused,
        _ if merged.is_empty() => AttendanceStatus::Absent,
        (Some(first), _) if first > start + rules.late_after => AttendanceStatus::Late,
        (_, Some(last)) if last < end - rules.early_before => AttendanceStatus::LeftEarly,
        _ => AttendanceStatus::Present,
    };
    Attendance {
        first_join,
        last_leave,
        connected_seconds: connected,
        reconnects: (spans.len() as i64 - 1).max(0),
        status,
    }
}

/// Attendance figures of a group of invitations (a unit, a region, a tier).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rate {
    pub expected: i64,
    pub present: i64,
    pub late: i64,
    pub left_early: i64,
    pub absent: i64,
    pub excused: i64,
}

impl Rate {
    pub fn count(&mut self, status: AttendanceStatus) {
        self.expected += 1;
        match status {
            AttendanceStatus::Present => self.present += 1,
            AttendanceStatus::Late => self.late += 1,
            AttendanceStatus::LeftEarly => self.left_early += 1,
            AttendanceStatus::Absent => self.absent += 1,
            AttendanceStatus::Excused => self.excused += 1,
        }
    }

    /// Attended / (expected − excused), in percent.
    pub fn rate(&self) -> Option<f64> {
        let counted = self.expected - self.excused;
        (counted > 0)
            .then(|| (self.present + self.late + self.left_early) as f64 * 100.0 / counted as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, h, m, 0).unwrap()
    }

    fn span(a: (u32, u32), b: Option<(u32, u32)>) -> Span {
        Span {
            joined: t(a.0, a.1),
            ended: b.map(|b| t(b.0, b.1)),
        }
    }

    #[test]
    fn overlapping_connections_and_reconnects() {
        // 09:00–10:30 meeting. Joined 08:55 (counts from 09:00), dropped 09:20, back 09:18
        // (overlap), left 09:40, back 09:50 till the end.
        let spans = [
            span((8, 55), Some((9, 20))),
            span((9, 18), Some((9, 40))),
            span((9, 50), None),
        ];
        let a = attendance(&spans, t(9, 0), t(10, 30), false, Rules::default());
        assert_eq!(a.connected_seconds, (40 + 40) * 60);
        assert_eq!(a.reconnects, 2);
        assert_eq!(a.first_join, Some(t(8, 55)));
        assert_eq!(a.last_leave, Some(t(10, 30)));
        assert_eq!(a.status, AttendanceStatus::Present);
    }

    #[test]
    fn late_early_absent_excused() {
        let r = Rules::default();
        let late = attendance(
            &[span((9, 6), Some((10, 30)))],
            t(9, 0),
            t(10, 30),
            false,
            r,
        );
        assert_eq!(
            (late.status, late.connected_seconds),
            (AttendanceStatus::Late, 84 * 60)
        );
        let on_time = attendance(
            &[span((9, 5), Some((10, 21)))],
            t(9, 0),
            t(10, 30),
            false,
            r,
        );
        assert_eq!(
            on_time.status,
            AttendanceStatus::Present,
            "5 minutes late and 9 early are tolerated"
        );
        let early = attendance(
            &[span((9, 0), Some((10, 19)))],
            t(9, 0),
            t(10, 30),
            false,
            r,
        );
        assert_eq!(early.status, AttendanceStatus::LeftEarly);
        assert_eq!(
            attendance(&[], t(9, 0), t(10, 30), false, r).status,
            AttendanceStatus::Absent
        );
        assert_eq!(
            attendance(&[], t(9, 0), t(10, 30), true, r).status,
            AttendanceStatus::Excused
        );
        // A connection entirely before the start counts as not there.
        let before = attendance(&[span((8, 0), Some((8, 30)))], t(9, 0), t(10, 30), false, r);
        assert_eq!(
            (before.status, before.connected_seconds),
            (AttendanceStatus::Absent, 0)
        );
    }

    #[test]
    fn rates_leave_the_excused_out() {
        let mut rate = Rate::default();
        for s in [
            AttendanceStatus::Present,
            AttendanceStatus::Late,
            AttendanceStatus::Absent,
            AttendanceStatus::Excused,
        ] {
            rate.count(s);
        }
        assert_eq!(rate.rate().map(|r| (r * 10.0).round() / 10.0), Some(66.7));
    }
}
