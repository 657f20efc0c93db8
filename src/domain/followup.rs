//! Follow-ups (督办): one per assigned unit of an action item, delegated down the tree,
//! reported on, verified. The state machine, who may move it, deadline colours and the
//! closure arithmetic. Pure.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Assigned,
    /// 签收
    Acknowledged,
    InProgress,
    /// 办结报告 submitted, waiting for the assigner.
    Submitted,
    /// 复核通过
    Verified,
    /// 退回: the assigner sent the report back with a reason.
    Returned,
    /// The assignee asks to close it without doing it; the assigner decides.
    NotDoingRequested,
    NotDoing,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Assigned,
        Status::Acknowledged,
        Status::InProgress,
        Status::Submitted,
        Status::Verified,
        Status::Returned,
        Status::NotDoingRequested,
        Status::NotDoing,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Assigned => "assigned",
            Status::Acknowledged => "acknowledged",
            Status::InProgress => "in_progress",
            Status::Submitted => "submitted",
            Status::Verified => "verified",
            Status::Returned => "returned",
            Status::NotDoingRequested => "not_doing_requested",
            Status::NotDoing => "not_doing",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn label_zh(self) -> &'static str {
        match self {
            Status::Assigned => "待签收",
            Status::Acknowledged => "已签收",
            Status::InProgress => "办理中",
            Status::Submitted => "已报送",
            Status::Verified => "复核通过",
            Status::Returned => "已退回",
            Status::NotDoingRequested => "申请不办理",
            Status::NotDoing => "不予办理",
            Status::Cancelled => "已撤销",
        }
    }

    /// Done with: verified, or closed without doing with the assigner's consent.
    pub fn is_closed(self) -> bool {
        matches!(self, Status::Verified | Status::NotDoing)
    }

    /// No longer counts at all.
    pub fn is_final(self) -> bool {
        self.is_closed() || self == Status::Cancelled
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown follow-up status {s:?}"))
    }
}

/// Which side of a follow-up acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The unit the follow-up is assigned to (承办单位).
    Assignee,
    /// The unit that assigned it (交办单位): the meeting's host, or the delegating unit.
    Assigner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Acknowledge,
    Progress,
    Submit,
    Verify,
    Return,
    RequestNotDoing,
    ApproveNotDoing,
    RejectNotDoing,
    Cancel,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Acknowledge,
        Action::Progress,
        Action::Submit,
        Action::RequestNotDoing,
        Action::Verify,
        Action::Return,
        Action::ApproveNotDoing,
        Action::RejectNotDoing,
        Action::Cancel,
    ];

    pub fn side(self) -> Side {
        match self {
            Action::Acknowledge | Action::Progress | Action::Submit | Action::RequestNotDoing => {
                Side::Assignee
            }
            Action::Verify
            | Action::Return
            | Action::ApproveNotDoing
            | Action::RejectNotDoing
            | Action::Cancel => Side::Assigner,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Progress => "progress",
            Action::Submit => "submit",
            Action::Verify => "verify",
            Action::Return => "return",
            Action::RequestNotDoing => "request_not_doing",
            Action::ApproveNotDoing => "approve_not_doing",
            Action::RejectNotDoing => "reject_not_doing",
            Action::Cancel => "cancel",
        }
    }

    /// Actions that must say why.
    pub fn needs_reason(self) -> bool {
        matches!(
            self,
            Action::Return
                | Action::RequestNotDoing
                | Action::RejectNotDoing
                | Action::Cancel
                | Action::Submit
                | Action::Progress
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("only the {needed:?} side may {action}; you act for the {actual:?} side")]
    WrongSide {
        action: &'static str,
        needed: Side,
        actual: Side,
    },
    #[error("cannot {action} a follow-up that is {status}")]
    NotAllowed {
        action: &'static str,
        status: Status,
    },
    #[error("{0} needs a text (a reason, a progress note or the report)")]
    MissingText(&'static str),
    #[error(
        "{open} delegated follow-up(s) below this one are not verified yet; verify them first or submit with an override and a reason"
    )]
    OpenChildren { open: usize },
}

/// The state after `action`, if `side` may take it from `status`. `open_children` counts
/// delegated follow-ups below that are not closed; `override_children` submits anyway.
pub fn transition(
    status: Status,
    action: Action,
    side: Side,
    text: &str,
    open_children: usize,
    override_children: bool,
) -> Result<Status, TransitionError> {
    if action.side() != side {
        return Err(TransitionError::WrongSide {
            action: action.as_str(),
            needed: action.side(),
            actual: side,
        });
    }
    if action.needs_reason() && text.trim().is_empty() {
        return Err(TransitionError::MissingText(action.as_str()));
    }
    use Status as S;
    let next = match (action, status) {
        (Action::Acknowledge, S::Assigned) => S::Acknowledged,
        (Action::Progress, S::Acknowledged | S::InProgress | S::Returned) => S::InProgress,
        (Action::Submit, S::Acknowledged | S::InProgress | S::Returned) => {
            if open_children > 0 && !override_children {
                return Err(TransitionError::OpenChildren {
                    open: open_children,
                });
            }
            S::Submitted
        }
        (Action::Verify, S::Submitted) => S::Verified,
        (Action::Return, S::Submitted) => S::Returned,
        (Action::RequestNotDoing, S::Assigned | S::Acknowledged | S::InProgress | S::Returned) => {
            S::NotDoingRequested
        }
        (Action::ApproveNotDoing, S::NotDoingRequested) => S::NotDoing,
        (Action::RejectNotDoing, S::NotDoingRequested) => S::InProgress,
        (Action::Cancel, s) if !s.is_final() => S::Cancelled,
        (action, status) => {
            return Err(TransitionError::NotAllowed {
                action: action.as_str(),
                status,
            });
        }
    };
    Ok(next)
}

/// Whether a unit may delegate its follow-up now.
pub fn may_delegate(status: Status, delegable: bool) -> Result<(), String> {
    if !delegable {
        return Err("this action item may not be delegated".into());
    }
    match status {
        Status::Acknowledged | Status::InProgress | Status::Returned => Ok(()),
        Status::Assigned => Err("acknowledge (签收) the follow-up before delegating it".into()),
        other => Err(format!("cannot delegate a follow-up that is {other}")),
    }
}

/// Deadline colour by time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    Green,
    Yellow,
    Red,
    /// Closed or cancelled: no deadline pressure.
    None,
}

impl Colour {
    pub fn as_str(self) -> &'static str {
        match self {
            Colour::Green => "green",
            Colour::Yellow => "yellow",
            Colour::Red => "red",
            Colour::None => "none",
        }
    }
}

/// When a follow-up turns yellow: at most `days` left, or at most `percent` of its whole span.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub yellow_days: i64,
    pub yellow_percent: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            yellow_days: 3,
            yellow_percent: 20,
        }
    }
}

pub fn colour(
    status: Status,
    assigned_at: DateTime<Utc>,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    t: Thresholds,
) -> Colour {
    if status.is_final() {
        return Colour::None;
    }
    let left = due - now;
    if left < Duration::zero() {
        return Colour::Red;
    }
    let span = (due - assigned_at).max(Duration::zero());
    if left <= Duration::days(t.yellow_days)
        || left.num_seconds() * 100 <= span.num_seconds() * t.yellow_percent
    {
        Colour::Yellow
    } else {
        Colour::Green
    }
}

/// Whole days overdue, counting a started day (0 when not overdue).
pub fn days_overdue(due: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let late = now - due;
    if late <= Duration::zero() {
        0
    } else {
        (late.num_seconds() + 86_399) / 86_400
    }
}

/// Which overdue period `now` is in: messages are sent at most once per period.
pub fn overdue_period(due: DateTime<Utc>, now: DateTime<Utc>, period: Duration) -> Option<i64> {
    let late = now - due;
    (late > Duration::zero()).then(|| late.num_seconds() / period.num_seconds().max(1))
}

/// Closure figures of a set of follow-ups.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Closure {
    pub total: i64,
    pub closed: i64,
    pub cancelled: i64,
    pub overdue: i64,
    /// Sum of days overdue of the open overdue ones (for averaging up the tree).
    pub overdue_days: i64,
}

impl Closure {
    /// closed / (total − cancelled), in percent; `None` when nothing counts.
    pub fn rate(&self) -> Option<f64> {
        let counted = self.total - self.cancelled;
        (counted > 0).then(|| self.closed as f64 * 100.0 / counted as f64)
    }

    pub fn average_days_overdue(&self) -> Option<f64> {
        (self.overdue > 0).then(|| self.overdue_days as f64 / self.overdue as f64)
    }

    pub fn add(&mut self, other: &Closure) {
        self.total += other.total;
        self.closed += other.closed;
        self.cancelled += other.cancelled;
        self.overdue += other.overdue;
        self.overdue_days += other.overdue_days;
    }

    pub fn count(&mut self, status: Status, due: DateTime<Utc>, now: DateTime<Utc>) {
        self.total += 1;
        if status.is_closed() {
            self.closed += 1;
        } else if status == Status::Cancelled {
            self.cancelled += 1;
        } else if now > due {
            self.overdue += 1;
            self.overdue_days += days_overdue(due, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_lifecycle_and_its_sides() {
        use Action as A;
        use Side::*;
        use Status as S;
        let t = |s, a, side| transition(s, a, side, "说明", 0, false);
        assert_eq!(
            t(S::Assigned, A::Acknowledge, Assignee),
            Ok(S::Acknowledged)
        );
        assert_eq!(t(S::Acknowledged, A::Progress, Assignee), Ok(S::InProgress));
        assert_eq!(t(S::InProgress, A::Submit, Assignee), Ok(S::Submitted));
        assert_eq!(t(S::Submitted, A::Return, Assigner), Ok(S::Returned));
        assert_eq!(t(S::Returned, A::Submit, Assignee), Ok(S::Submitted));
        assert_eq!(t(S::Submitted, A::Verify, Assigner), Ok(S::Verified));
        assert_eq!(
            t(S::InProgress, A::RequestNotDoing, Assignee),
            Ok(S::NotDoingRequested)
        );
        assert_eq!(
            t(S::NotDoingRequested, A::RejectNotDoing, Assigner),
            Ok(S::InProgress)
        );
        assert_eq!(
            t(S::NotDoingRequested, A::ApproveNotDoing, Assigner),
            Ok(S::NotDoing)
        );
        assert_eq!(t(S::InProgress, A::Cancel, Assigner), Ok(S::Cancelled));

        // An enterprise verifying its own report: the wrong side.
        assert!(matches!(
            t(S::Submitted, A::Verify, Assignee),
            Err(TransitionError::WrongSide { .. })
        ));
        assert!(matches!(
            t(S::Assigned, A::Submit, Assignee),
            Err(TransitionError::NotAllowed { .. })
        ));
        assert!(matches!(
            t(S::Verified, A::Cancel, Assigner),
            Err(TransitionError::NotAllowed { .. })
        ));
        assert_eq!(
            transition(S::Submitted, A::Return, Assigner, " ", 0, false),
            Err(TransitionError::MissingText("return"))
        );
        assert_eq!(
            transition(S::InProgress, A::Submit, Assignee, "报告", 2, false),
            Err(TransitionError::OpenChildren { open: 2 })
        );
        assert_eq!(
            transition(S::InProgress, A::Submit, Assignee, "报告", 2, true),
            Ok(S::Submitted)
        );
    }

    #[test]
    fn colours_by_time_left() {
        let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).unwrap();
        let th = Thresholds::default();
        let (assigned, due) = (at(1, 0), at(31, 0));
        assert_eq!(
            colour(Status::InProgress, assigned, due, at(10, 0), th),
            Colour::Green
        );
        assert_eq!(
            colour(Status::InProgress, assigned, due, at(28, 1), th),
            Colour::Yellow,
            "under 3 days"
        );
        assert_eq!(
            colour(Status::InProgress, assigned, due, at(31, 1), th),
            Colour::Red
        );
        assert_eq!(
            colour(Status::Verified, assigned, due, at(31, 1), th),
            Colour::None
        );
        // A short span: 20% of 10 days is 2 days — the day rule (3 days) comes first here,
        // while for a 30-day span 20% (6 days) does.
        assert_eq!(
            colour(Status::Assigned, assigned, due, at(25, 1), th),
            Colour::Yellow,
            "under 20% of 30 days"
        );
    }

    #[test]
    fn closure_arithmetic() {
        let at = |d: u32| Utc.with_ymd_and_hms(2026, 12, d, 12, 0, 0).unwrap();
        let now = at(20);
        let mut c = Closure::default();
        c.count(Status::Verified, at(10), now);
        c.count(Status::NotDoing, at(10), now);
        c.count(Status::Cancelled, at(10), now);
        c.count(Status::InProgress, at(17), now); // 3 days overdue
        c.count(Status::Submitted, at(19), now); // 1 day overdue
        c.count(Status::Assigned, at(25), now);
        assert_eq!(
            (c.total, c.closed, c.cancelled, c.overdue, c.overdue_days),
            (6, 2, 1, 2, 4)
        );
        assert_eq!(c.rate(), Some(40.0));
        assert_eq!(c.average_days_overdue(), Some(2.0));
        assert_eq!(days_overdue(at(19), at(19) + Duration::hours(1)), 1);
        assert_eq!(overdue_period(at(10), at(12), Duration::days(1)), Some(2));
        assert_eq!(overdue_period(at(10), at(9), Duration::days(1)), None);
    }
}
