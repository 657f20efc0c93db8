//! The RFC 5545 calendar part of invitation, update and cancellation messages.

use chrono::{DateTime, Offset, TimeZone, Utc};
use icalendar::{
    Attendee, Calendar, CalendarDateTime, Component, Event, EventLike, EventStatus, Property,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Request,
    Cancel,
}

pub struct CalendarEntry<'a> {
    pub method: Method,
    /// Stable per meeting: updates and cancellations replace the same calendar entry.
    pub uid: &'a str,
    pub sequence: u32,
    pub summary: &'a str,
    pub description: &'a str,
    pub location: &'a str,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub timezone: chrono_tz::Tz,
    pub organizer_name: &'a str,
    pub organizer_email: &'a str,
    pub attendee_name: &'a str,
    pub attendee_email: &'a str,
    /// The invitee's personal link.
    pub url: &'a str,
    pub stamp: DateTime<Utc>,
}

/// The text of the `text/calendar` part.
pub fn ics(entry: &CalendarEntry) -> String {
    let local = |t: DateTime<Utc>| CalendarDateTime::WithTimezone {
        date_time: t.with_timezone(&entry.timezone).naive_local(),
        tzid: entry.timezone.name().to_string(),
    };
    let mut event = Event::new();
    event
        .uid(entry.uid)
        .sequence(entry.sequence)
        .timestamp(entry.stamp)
        .summary(entry.summary)
        .description(entry.description)
        .location(entry.location)
        .url(entry.url)
        .starts(local(entry.starts_at))
        .ends(local(entry.ends_at))
        .append_property(
            Property::new("ORGANIZER", format!("mailto:{}", entry.organizer_email))
                .add_parameter("CN", entry.organizer_name)
                .done(),
        )
        .attendee(
            Attendee::new(format!("mailto:{}", entry.attendee_email))
                .cn(entry.attendee_name.to_string())
                .rsvp(true),
        );
    let method = match entry.method {
        Method::Request => {
            event.status(EventStatus::Confirmed);
            "REQUEST"
        }
        Method::Cancel => {
            event.status(EventStatus::Cancelled);
            "CANCEL"
        }
    };
    let mut calendar = Calendar::new();
    calendar.append_property(Property::new("METHOD", method));
    calendar.push(event);
    let text = calendar.done().to_string();
    // icalendar has no VTIMEZONE builder. A single, non-recurring event needs only the offset
    // in force at its time, so one STANDARD block with that offset describes it exactly.
    let offset = entry
        .timezone
        .offset_from_utc_datetime(&entry.starts_at.naive_utc())
        .fix()
        .local_minus_utc();
    let sign = if offset < 0 { '-' } else { '+' };
    let hhmm = format!(
        "{sign}{:02}{:02}",
        offset.abs() / 3600,
        offset.abs() % 3600 / 60
    );
    let vtimezone = format!(
        "BEGIN:VTIMEZONE\r\nTZID:{}\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\nTZOFFSETFROM:{hhmm}\r\n\
         TZOFFSETTO:{hhmm}\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n",
        entry.timezone.name()
    );
    match text.find("BEGIN:VEVENT") {
        Some(at) => format!("{}{vtimezone}{}", &text[..at], &text[at..]),
        None => text,
    }
}
