//! E-mail end to end, on SQLite and (with MUSTER_TEST_POSTGRES_URL) PostgreSQL: a dispatch is
//! published, rescheduled and cancelled, the job queue runs on a manual clock, and the
//! messages arrive at an SMTP server inside the test process (`common::smtp`), where they are
//! counted per recipient and parsed (MIME with mail-parser, the calendar part with
//! icalendar's parser).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestDb;
use common::smtp::{Received, SmtpServer};
use icalendar::{Calendar, CalendarComponent, Component, Property};
use mail_parser::{MessageParser, MimeHeaders};
use muster::config::{MailTransport, SmtpTls};
use muster::domain::access::{Principal, StaffRole};
use muster::jobs::{Clock, ManualClock, Outcome, Worker};
use muster::store::MeetingRecord;

const SHANGHAI: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
const PUBLIC_URL: &str = "https://muster.he.example.cn";
/// The host of `PUBLIC_URL`: muster's domain in Message-IDs and calendar UIDs.
const HOST: &str = "muster.he.example.cn";
const FROM: &str = "河北省应急管理厅 <yjt@he.example.cn>";
const FROM_NAME: &str = "河北省应急管理厅";
const FROM_ADDRESS: &str = "yjt@he.example.cn";
const COAL: &str = "coal-mine-resumption";

/// 09:00 Shanghai time on a weekday at least two days ahead.
fn next_start() -> DateTime<Utc> {
    let mut day = (Utc::now() + Duration::days(2))
        .with_timezone(&SHANGHAI)
        .date_naive();
    while matches!(
        chrono::Datelike::weekday(&day),
        chrono::Weekday::Sat | chrono::Weekday::Sun
    ) {
        day = day.succ_opt().unwrap();
    }
    SHANGHAI
        .from_local_datetime(&day.and_hms_opt(9, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn local(t: DateTime<Utc>, format: &str) -> String {
    t.with_timezone(&SHANGHAI).format(format).to_string()
}

/// Demo addresses are `{role}.{unit code}@…`; enterprise codes have an `E` in them.
fn is_enterprise_principal(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or_default();
    local.starts_with("principal.") && local.contains('e')
}

fn admin() -> Principal {
    Principal {
        account_id: 0,
        username: "test".into(),
        role: StaffRole::Admin,
        unit_id: 0,
        unit_name: "all".into(),
        unit_path: "/".into(),
    }
}

/// Publishes the coal-mine dispatch from 河北省 at `start`; returns its id.
async fn publish(db: &TestDb, start: DateTime<Utc>) -> i64 {
    let templates =
        muster::agendas::load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/agendas")))
            .unwrap();
    let input = muster::dispatch::DispatchInput {
        template: COAL.into(),
        root_unit: "130000".into(),
        start: local(start, "%Y-%m-%d %H:%M"),
        chosen_units: vec![],
    };
    let (id, _) = muster::dispatch::publish(
        &db.store,
        &templates,
        &muster::config::Config::default().livekit,
        &admin(),
        &input,
        Utc::now(),
    )
    .await
    .unwrap();
    id
}

/// The test SMTP server, and muster's workers sending to it on a manual clock.
struct Mailroom {
    smtp: SmtpServer,
    clock: ManualClock,
    worker: Worker,
    backoff_base: Duration,
}

impl Mailroom {
    async fn new(db: &TestDb) -> Self {
        let smtp = SmtpServer::start().await;
        let mut config = common::test_config(db);
        config.public_url = PUBLIC_URL.into();
        config.mail.transport = MailTransport::Smtp;
        config.mail.from = FROM.into();
        config.mail.smtp.host = "127.0.0.1".into();
        config.mail.smtp.port = smtp.port();
        config.mail.smtp.tls = SmtpTls::None;
        let clock = ManualClock::new(Utc::now());
        let workers = muster::startup::job_workers(&config, &db.store, Arc::new(clock.clone()))
            .await
            .unwrap();
        Self {
            smtp,
            clock,
            worker: workers.into_iter().next().unwrap(),
            backoff_base: Duration::seconds(i64::from(config.jobs.backoff_base_seconds)),
        }
    }

    /// Publishing, rescheduling and cancelling stamp their jobs with the wall clock; the
    /// manual clock has to reach that time for them to be due.
    fn catch_up(&self) {
        let now = Utc::now();
        if self.clock.now() < now {
            self.clock.set(now);
        }
    }

    /// Runs the queue until nothing is due; returns what happened to the jobs of meeting
    /// messages and mail (jobs of other kinds, such as rooms, are not these tests' business).
    async fn run(&self) -> Vec<Outcome> {
        let outcomes = self.worker.run_until_idle().await.expect("job queue");
        outcomes
            .into_iter()
            .filter(|o| match o {
                Outcome::Done { kind, .. }
                | Outcome::Retrying { kind, .. }
                | Outcome::Dead { kind, .. } => kind == "mail.send" || kind.starts_with("meeting."),
                Outcome::LostLease { .. } => true,
            })
            .collect()
    }

    /// Runs the queue and expects every job to succeed.
    async fn run_clean(&self) -> Vec<Outcome> {
        let outcomes = self.run().await;
        let failed: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Done { .. }))
            .collect();
        assert!(failed.is_empty(), "jobs failed: {failed:#?}");
        outcomes
    }

    /// The messages received since the last call, parsed.
    fn take(&self) -> Vec<Mail> {
        self.smtp.take().iter().map(Mail::parse).collect()
    }
}

/// A received message, parsed.
#[derive(Debug)]
struct Mail {
    envelope_from: String,
    envelope_to: Vec<String>,
    from_name: Option<String>,
    from_address: String,
    to_name: Option<String>,
    to_address: String,
    subject: String,
    message_id: String,
    text: String,
    /// The `text/calendar` part and the `method` of its content type.
    calendar: Option<(String, Option<String>)>,
    /// The personal link's token (from the text, else from the calendar's URL).
    token: String,
}

impl Mail {
    fn parse(received: &Received) -> Self {
        let raw = String::from_utf8_lossy(&received.data);
        let message = MessageParser::default()
            .parse(&received.data)
            .unwrap_or_else(|| panic!("not a message:\n{raw}"));
        let from = message.from().and_then(|a| a.first()).expect("From");
        let to = message.to().and_then(|a| a.first()).expect("To");
        assert_eq!(message.to().unwrap().iter().count(), 1, "one To:\n{raw}");
        let mut text = None;
        let mut calendar = None;
        for part in &message.parts {
            let Some(content_type) = part.content_type() else {
                continue;
            };
            if !content_type.ctype().eq_ignore_ascii_case("text") {
                continue;
            }
            let contents = part
                .text_contents()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8(part.contents().to_vec()).unwrap());
            match content_type
                .subtype()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("plain") => {
                    assert!(text.is_none(), "one text/plain part:\n{raw}");
                    text = Some(contents);
                }
                Some("calendar") => {
                    assert!(calendar.is_none(), "one text/calendar part:\n{raw}");
                    let method = content_type.attribute("method").map(str::to_string);
                    calendar = Some((contents, method));
                }
                other => panic!("unexpected text/{other:?} part:\n{raw}"),
            }
        }
        let text = text.unwrap_or_else(|| panic!("no text/plain part:\n{raw}"));
        let prefix = format!("{PUBLIC_URL}/i/");
        let from_text = text.find(&prefix).map(|at| {
            text[at + prefix.len()..]
                .chars()
                .take(40)
                .collect::<String>()
        });
        let from_calendar = calendar.as_ref().map(|(ics, _)| {
            let url = Ics::parse(ics).url;
            url.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("calendar URL {url:?} is not a personal link"))
                .to_string()
        });
        if let (Some(a), Some(b)) = (&from_text, &from_calendar) {
            assert_eq!(a, b, "the text and the calendar carry the same link");
        }
        let token = from_text
            .or(from_calendar)
            .unwrap_or_else(|| panic!("no personal link:\n{raw}"));
        assert!(
            token.len() == 40 && token.chars().all(|c| c.is_ascii_hexdigit()),
            "link token {token:?}"
        );
        Self {
            envelope_from: received.from.clone(),
            envelope_to: received.to.clone(),
            from_name: from.name().map(str::to_string),
            from_address: from.address().unwrap_or_default().to_string(),
            to_name: to.name().map(str::to_string),
            to_address: to.address().unwrap_or_default().to_string(),
            subject: message.subject().unwrap_or_default().to_string(),
            message_id: message.message_id().unwrap_or_default().to_string(),
            text,
            calendar,
            token,
        }
    }

    fn parse_subject(received: &Received) -> String {
        let message = MessageParser::default().parse(&received.data).unwrap();
        message.subject().unwrap_or_default().to_string()
    }

    fn ics(&self) -> Ics {
        let (text, method) = self
            .calendar
            .as_ref()
            .unwrap_or_else(|| panic!("no calendar part in {:?}", self.subject));
        let ics = Ics::parse(text);
        assert_eq!(
            method.as_deref(),
            Some(ics.method.as_str()),
            "content type's method"
        );
        ics
    }
}

/// What the tests look at in a calendar part.
#[derive(Debug)]
struct Ics {
    method: String,
    uid: String,
    sequence: u32,
    status: String,
    url: String,
    dtstart: Property,
    dtend: Property,
    organizer: Property,
    attendees: Vec<Property>,
    /// (TZID, TZOFFSETTO of its first sub-component) of each VTIMEZONE.
    timezones: Vec<(String, String)>,
}

impl Ics {
    fn parse(text: &str) -> Self {
        let calendar: Calendar = text
            .parse()
            .unwrap_or_else(|e| panic!("calendar part does not parse: {e}\n{text}"));
        let events: Vec<&icalendar::Event> = calendar
            .components
            .iter()
            .filter_map(CalendarComponent::as_event)
            .collect();
        assert_eq!(events.len(), 1, "one VEVENT:\n{text}");
        let event = events[0];
        let timezones = calendar
            .components
            .iter()
            .filter_map(|c| match c {
                CalendarComponent::Other(o) if o.component_kind() == "VTIMEZONE" => Some((
                    o.property_value("TZID").unwrap_or_default().to_string(),
                    o.components()
                        .first()
                        .and_then(|s| s.property_value("TZOFFSETTO"))
                        .unwrap_or_default()
                        .to_string(),
                )),
                _ => None,
            })
            .collect();
        let property = |key: &str| {
            event
                .properties()
                .get(key)
                .cloned()
                .unwrap_or_else(|| panic!("no {key}:\n{text}"))
        };
        Self {
            method: calendar.property_value("METHOD").unwrap_or_default().into(),
            uid: event.get_uid().unwrap_or_default().into(),
            sequence: event.get_sequence().expect("SEQUENCE"),
            status: event.property_value("STATUS").unwrap_or_default().into(),
            url: event.get_url().unwrap_or_default().into(),
            dtstart: property("DTSTART"),
            dtend: property("DTEND"),
            organizer: property("ORGANIZER"),
            attendees: event
                .multi_properties()
                .get("ATTENDEE")
                .cloned()
                .unwrap_or_default(),
            timezones,
        }
    }
}

fn param<'a>(property: &'a Property, key: &str) -> Option<&'a str> {
    property.params().get(key).map(|p| p.value())
}

/// An invitation that has an address, as the database says.
#[derive(Debug, Clone)]
struct Invitee {
    id: i64,
    meeting_id: i64,
    email: String,
    rsvp: String,
}

/// The invitations with an address of the given meetings.
async fn addressed(db: &TestDb, meetings: &[&MeetingRecord]) -> Vec<Invitee> {
    let mut out = Vec::new();
    for m in meetings {
        let (rows, total) = db
            .store
            .meeting_invitations(m.id, "/", 1_000_000, 0)
            .await
            .unwrap();
        assert_eq!(rows.len() as i64, total);
        out.extend(rows.into_iter().filter_map(|i| {
            Some(Invitee {
                id: i.id,
                meeting_id: i.meeting_id,
                email: i.email?,
                rsvp: i.rsvp,
            })
        }));
    }
    out
}

/// The invitation each message is about, found through its personal link.
async fn by_invitation(db: &TestDb, mails: Vec<Mail>) -> Vec<(i64, Mail)> {
    let mut out = Vec::new();
    for mail in mails {
        let invitation = db
            .store
            .invitation_by_link(&muster::auth::token_hash(&mail.token))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the link in {:?} names no invitation", mail.subject));
        out.push((invitation.id, mail));
    }
    out
}

/// Asserts that the messages are exactly one per expected invitation, each to its address
/// (envelope and header), and that per address the counts match.
fn assert_once_each(received: &[(i64, Mail)], expected: &[Invitee], what: &str) {
    let mut per_invitation: HashMap<i64, usize> = HashMap::new();
    for (id, _) in received {
        *per_invitation.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = per_invitation.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: invitations messaged more than once: {twice:?}"
    );
    let expected_ids: HashSet<i64> = expected.iter().map(|i| i.id).collect();
    let got_ids: HashSet<i64> = per_invitation.keys().copied().collect();
    let missing: Vec<_> = expected_ids.difference(&got_ids).collect();
    let extra: Vec<_> = got_ids.difference(&expected_ids).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, unexpected {extra:?}"
    );
    let address_of: HashMap<i64, &str> =
        expected.iter().map(|i| (i.id, i.email.as_str())).collect();
    for (id, mail) in received {
        assert_eq!(mail.envelope_to, vec![address_of[id].to_string()], "{what}");
        assert_eq!(mail.to_address, address_of[id], "{what}");
        assert_eq!(mail.envelope_from, FROM_ADDRESS);
    }
    // Per recipient address, as a mail server would count them.
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, mail) in received {
        *got.entry(mail.envelope_to[0].as_str()).or_default() += 1;
    }
    let mut want: BTreeMap<&str, usize> = BTreeMap::new();
    for i in expected {
        *want.entry(i.email.as_str()).or_default() += 1;
    }
    assert_eq!(got, want, "{what}: messages per recipient");
    let ids: HashSet<&str> = received
        .iter()
        .map(|(_, m)| m.message_id.as_str())
        .collect();
    assert_eq!(
        ids.len(),
        received.len(),
        "{what}: Message-IDs are distinct"
    );
}

fn done_count(outcomes: &[Outcome], kind: &str) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Done { kind: k, .. } if k == kind))
        .count()
}

backend_tests! {
    async fn publishing_sends_one_invitation_per_invitee(db: TestDb) {
        muster::directory::load_demo(&db.store, 60).await.unwrap();
        let start = next_start();
        let id = publish(db, start).await;
        let mail = Mailroom::new(db).await;
        mail.catch_up();
        let outcomes = mail.run_clean().await;

        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        assert_eq!(done_count(&outcomes, "meeting.invite"), meetings.len());
        let expected = addressed(db, &meetings.iter().collect::<Vec<_>>()).await;
        assert!(expected.len() > 20, "{} invitations with an address", expected.len());
        let received = by_invitation(db, mail.take()).await;
        assert_once_each(&received, &expected, "invitations");
        assert_eq!(done_count(&outcomes, "mail.send"), expected.len());
        let recorded = db.store.notifications(Some("invitation")).await.unwrap();
        assert_eq!(recorded.len(), expected.len(), "each message recorded once");

        // Every message: the Chinese subject, both parts, a REQUEST for its own meeting.
        let meeting_of: HashMap<i64, &MeetingRecord> = expected
            .iter()
            .map(|i| (i.id, meetings.iter().find(|m| m.id == i.meeting_id).unwrap()))
            .collect();
        for (invitation, m) in &received {
            let meeting = meeting_of[invitation];
            let when = local(meeting.planned_start, "%Y-%m-%d %H:%M");
            assert_eq!(m.subject, format!("【会议通知】{}（{when}）", meeting.title));
            assert_eq!((m.from_name.as_deref(), m.from_address.as_str()), (Some(FROM_NAME), FROM_ADDRESS));
            let ics = m.ics();
            assert_eq!((ics.method.as_str(), ics.sequence), ("REQUEST", 0));
            assert_eq!(ics.uid, format!("meeting-{}@{HOST}", meeting.id));
            assert!(m.text.contains(&format!("{PUBLIC_URL}/i/{}", m.token)));
        }

        // One message in detail: an enterprise head invited to the provincial call.
        let root = meetings.iter().find(|m| m.parent_id.is_none()).unwrap();
        let (invitation, m) = received
            .iter()
            .find(|(i, m)| meeting_of[i].id == root.id && is_enterprise_principal(&m.to_address))
            .expect("an enterprise principal in the provincial call");
        let context = db.store.invitation_context(*invitation).await.unwrap();
        let person = context.person_name.clone().expect("invited by name");
        assert_eq!(m.to_name.as_deref(), Some(context.display_name().as_str()), "RFC 2047 display name");
        assert!(m.to_name.as_deref().unwrap().contains(&context.unit_name));
        assert!(m.subject.starts_with("【会议通知】全省煤矿复工复产和疫情防控视频调度会"), "{}", m.subject);
        assert!(m.text.starts_with(&format!("{person}：")), "{}", m.text);
        assert!(m.text.contains("1. 传达国务院和省政府关于延迟企业复工复产的通知精神（10 分钟，省应急管理厅主要负责人）"), "{}", m.text);
        assert!(m.text.contains(&format!("会议时间：{} 至 {}（Asia/Shanghai）", local(start, "%Y-%m-%d %H:%M"), local(start + Duration::minutes(90), "%H:%M"))), "{}", m.text);
        assert!(m.text.trim_end().ends_with(FROM_NAME));
        assert_eq!(m.message_id, format!("mail.invitation.{invitation}@{HOST}"));

        let ics = m.ics();
        assert_eq!(ics.status, "CONFIRMED");
        assert_eq!(ics.url, format!("{PUBLIC_URL}/i/{}", m.token));
        assert_eq!(param(&ics.dtstart, "TZID"), Some("Asia/Shanghai"));
        assert_eq!(ics.dtstart.value(), local(start, "%Y%m%dT%H%M%S"));
        assert_eq!(param(&ics.dtend, "TZID"), Some("Asia/Shanghai"));
        assert_eq!(ics.dtend.value(), local(start + Duration::minutes(90), "%Y%m%dT%H%M%S"));
        assert_eq!(ics.timezones, vec![("Asia/Shanghai".to_string(), "+0800".to_string())]);
        assert_eq!(ics.organizer.value(), format!("mailto:{FROM_ADDRESS}"));
        assert_eq!(param(&ics.organizer, "CN"), Some(FROM_NAME));
        assert_eq!(ics.attendees.len(), 1);
        let attendee = &ics.attendees[0];
        assert_eq!(attendee.value(), format!("mailto:{}", m.to_address));
        assert_eq!(param(attendee, "RSVP"), Some("TRUE"));
        assert_eq!(param(attendee, "CN"), Some(context.display_name().as_str()));

        // Nothing is sent twice.
        assert!(mail.run().await.is_empty());
        mail.clock.advance(Duration::hours(1));
        assert!(mail.run().await.is_empty());
        assert!(mail.smtp.messages().is_empty());
    }

    async fn invitations_without_an_address_get_no_message(db: TestDb) {
        // The small directory: 路南区 has neither people nor a mailbox.
        common::seed(&db.store).await;
        let id = publish(db, next_start()).await;
        let mail = Mailroom::new(db).await;
        mail.catch_up();
        mail.run_clean().await;
        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        let all = meetings.iter().collect::<Vec<_>>();
        let expected = addressed(db, &all).await;
        let total = common::count(db, "invitations").await as usize;
        assert!(expected.len() < total, "some invitation has no address");
        assert!(!expected.is_empty());
        let received = by_invitation(db, mail.take()).await;
        assert_once_each(&received, &expected, "invitations");
        assert!(db.store.jobs_by_status(Some("dead"), 10).await.unwrap().is_empty());
    }

    async fn reschedule_and_cancel_send_one_update_and_one_cancellation_each(db: TestDb) {
        muster::directory::load_demo(&db.store, 60).await.unwrap();
        let start = next_start();
        let id = publish(db, start).await;
        let mail = Mailroom::new(db).await;
        mail.catch_up();
        mail.run_clean().await;
        let links: HashMap<i64, String> = by_invitation(db, mail.take()).await.into_iter().map(|(i, m)| (i, m.token)).collect();

        // An hour later: the call, its sub-venues and the city meetings move.
        let later = start + Duration::hours(1);
        let moved = muster::dispatch::reschedule_dispatch(&db.store, &muster::config::Config::default().livekit, &admin(), id, &local(later, "%Y-%m-%d %H:%M"), Utc::now()).await.unwrap();
        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        let moved_meetings: Vec<&MeetingRecord> = meetings.iter().filter(|m| m.sequence == 1).collect();
        assert_eq!(moved_meetings.len(), moved);
        assert!(moved > 1);
        mail.catch_up();
        let outcomes = mail.run_clean().await;
        assert_eq!(done_count(&outcomes, "meeting.update"), moved);
        let expected = addressed(db, &moved_meetings).await;
        let received = by_invitation(db, mail.take()).await;
        assert_once_each(&received, &expected, "updates");
        for (invitation, m) in &received {
            let meeting = meetings.iter().find(|x| expected.iter().any(|i| i.id == *invitation && i.meeting_id == x.id)).unwrap();
            assert_eq!(m.subject, format!("【会议变更】{} 改为 {}", meeting.title, local(meeting.planned_start, "%Y-%m-%d %H:%M")));
            assert_eq!(m.token, links[invitation], "the personal link stays the same");
            let ics = m.ics();
            assert_eq!((ics.method.as_str(), ics.sequence, ics.status.as_str()), ("REQUEST", 1, "CONFIRMED"));
            assert_eq!(ics.uid, format!("meeting-{}@{HOST}", meeting.id), "same calendar entry");
            assert_eq!(ics.dtstart.value(), local(meeting.planned_start, "%Y%m%dT%H%M%S"));
            assert_eq!(m.message_id, format!("mail.update.{invitation}.1@{HOST}"));
        }
        let root = meetings.iter().find(|m| m.parent_id.is_none()).unwrap();
        assert_eq!(root.planned_start, later);
        assert!(received.iter().any(|(_, m)| m.ics().dtstart.value() == local(later, "%Y%m%dT%H%M%S")));
        assert!(mail.run().await.is_empty(), "nothing more to send");
        assert!(mail.smtp.messages().is_empty());

        // Cancelled: one cancellation per invitation of every meeting.
        let cancelled = muster::dispatch::cancel_dispatch(&db.store, &admin(), id, "疫情形势变化").await.unwrap();
        assert_eq!(cancelled, meetings.len());
        mail.catch_up();
        let outcomes = mail.run_clean().await;
        assert_eq!(done_count(&outcomes, "meeting.cancel"), meetings.len());
        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        let expected = addressed(db, &meetings.iter().collect::<Vec<_>>()).await;
        assert_eq!(expected.len(), links.len(), "every invitee was invited");
        let received = by_invitation(db, mail.take()).await;
        assert_once_each(&received, &expected, "cancellations");
        for (invitation, m) in &received {
            let meeting = meetings.iter().find(|x| expected.iter().any(|i| i.id == *invitation && i.meeting_id == x.id)).unwrap();
            assert_eq!(meeting.status, "cancelled");
            assert_eq!(m.subject, format!("【会议取消】{}", meeting.title));
            assert!(m.text.contains("取消原因：疫情形势变化"), "{}", m.text);
            assert_eq!(m.token, links[invitation]);
            let ics = m.ics();
            assert_eq!((ics.method.as_str(), ics.status.as_str()), ("CANCEL", "CANCELLED"));
            assert_eq!(ics.uid, format!("meeting-{}@{HOST}", meeting.id));
            assert_eq!(i64::from(ics.sequence), meeting.sequence, "the cancellation supersedes the last request");
            assert!(ics.sequence >= 1);
        }
        assert!(mail.run().await.is_empty(), "nothing more to send");
        // The reminders of the cancelled meetings come due and say nothing.
        mail.clock.advance(Duration::days(10));
        let outcomes = mail.run_clean().await;
        assert!(done_count(&outcomes, "meeting.remind") > 0);
        assert_eq!(done_count(&outcomes, "mail.send"), 0);
        assert!(mail.smtp.messages().is_empty());
    }

    async fn the_personal_link_opens_the_invitation(db: TestDb) {
        common::seed(&db.store).await;
        let id = publish(db, next_start()).await;
        let mail = Mailroom::new(db).await;
        mail.catch_up();
        mail.run_clean().await;
        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        let root = meetings.iter().find(|m| m.parent_id.is_none()).unwrap();
        let received = by_invitation(db, mail.take()).await;
        let (invitation, m) = received
            .iter()
            .find(|(_, m)| m.to_address == "ww@kl.example.cn" && m.ics().uid == format!("meeting-{}@{HOST}", root.id))
            .expect("开滦王五 is invited to the provincial call");
        assert_eq!(m.to_name.as_deref(), Some("开滦王五 · 开滦煤业"));

        let app = common::spawn_app(db).await;
        let client = reqwest::Client::new();
        let page = client.get(app.url(&format!("/i/{}", m.token))).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains(&root.title), "{html}");
        assert!(html.contains("开滦王五 · 开滦煤业") && html.contains("尚未确认"), "{html}");

        let csrf = common::csrf_of(&html);
        let refused = client.post(app.url(&format!("/i/{}/rsvp", m.token))).form(&[("answer", "confirm")]).send().await.unwrap();
        assert_eq!(refused.status(), 403, "a form without the page's CSRF token is refused");
        let answered = client
            .post(app.url(&format!("/i/{}/rsvp", m.token)))
            .form(&[("answer", "confirm"), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 200, "redirected back to the page");
        assert!(answered.text().await.unwrap().contains("已确认参会"));
        assert_eq!(db.store.invitation_context(*invitation).await.unwrap().rsvp, "confirmed");
        let others: Vec<_> = received.iter().filter(|(i, _)| i != invitation).collect();
        for (other, _) in &others {
            assert_eq!(db.store.invitation_context(*other).await.unwrap().rsvp, "pending", "only that invitation");
        }

        muster::dispatch::cancel_dispatch(&db.store, &admin(), id, "改为现场会").await.unwrap();
        let html = client.get(app.url(&format!("/i/{}", m.token))).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("该会议已取消"), "{html}");
        assert!(html.contains("取消原因：改为现场会"), "{html}");
        let late = client.post(app.url(&format!("/i/{}/rsvp", m.token))).form(&[("answer", "decline"), ("csrf", &csrf)]).send().await.unwrap();
        assert_eq!(late.status(), 409);
        assert_eq!(db.store.invitation_context(*invitation).await.unwrap().rsvp, "confirmed");

        // Unknown or malformed tokens.
        let unknown = "0123456789abcdef0123456789abcdef01234567";
        assert_ne!(unknown, m.token);
        for token in [unknown, "nope", &m.token[..39]] {
            let response = client.get(app.url(&format!("/i/{token}"))).send().await.unwrap();
            assert_eq!(response.status(), 404, "{token}");
            assert!(response.text().await.unwrap().contains("链接无效"));
        }
        let response = client.post(app.url(&format!("/i/{unknown}/rsvp"))).form(&[("answer", "confirm"), ("csrf", &muster::web::link_csrf(unknown))]).send().await.unwrap();
        assert_eq!(response.status(), 404);
        app.stop().await;
    }

    async fn a_refusing_server_is_retried_with_backoff(db: TestDb) {
        common::seed(&db.store).await;
        let id = publish(db, next_start()).await;
        let mail = Mailroom::new(db).await;
        mail.smtp.refuse_next(3);
        mail.catch_up();
        let first_run_at = mail.clock.now();
        let outcomes = mail.run().await;
        let retrying: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Retrying { id, kind, error } => {
                    assert_eq!(kind, "mail.send");
                    assert!(error.contains("451") || error.contains("try again later"), "{error}");
                    Some(*id)
                }
                Outcome::Dead { error, .. } => panic!("nothing should die: {error}"),
                _ => None,
            })
            .collect();
        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        let expected = addressed(db, &meetings.iter().collect::<Vec<_>>()).await;
        assert!(expected.len() > 5, "{} invitations with an address", expected.len());
        assert_eq!(retrying.len(), 3, "{outcomes:#?}");
        assert_eq!(mail.smtp.refusals(), 3);
        assert_eq!(mail.smtp.messages().len(), expected.len() - 3);

        // Backed off: base · 2⁰ plus up to half of it.
        for job in &retrying {
            let job = db.store.job(*job).await.unwrap();
            assert_eq!((job.status.as_str(), job.attempts), ("queued", 1));
            assert!(job.last_error.as_deref().unwrap_or_default().contains("try again later"), "{:?}", job.last_error);
            let delay = job.run_at - first_run_at;
            // PostgreSQL keeps microseconds; the clock has nanoseconds.
            let slack = Duration::milliseconds(1);
            assert!(delay >= mail.backoff_base - slack && delay <= mail.backoff_base * 3 / 2 + slack, "retry in {delay}");
        }
        assert!(mail.run().await.is_empty(), "not due before the backoff");
        mail.clock.advance(mail.backoff_base * 3 / 2 + Duration::seconds(1));
        let outcomes = mail.run_clean().await;
        assert_eq!(done_count(&outcomes, "mail.send"), 3);

        let received = by_invitation(db, mail.take()).await;
        assert_once_each(&received, &expected, "invitations after retries");
        let jobs = db.store.jobs(Some("mail.send")).await.unwrap();
        assert_eq!(jobs.len(), expected.len());
        for job in &jobs {
            assert_eq!(job.status, "done");
            assert_eq!(job.last_error, None);
            let want = if retrying.contains(&job.id) { 2 } else { 1 };
            assert_eq!(job.attempts, want, "job {}", job.id);
        }
        assert!(mail.run().await.is_empty());
    }

    async fn a_rejected_address_goes_dead_and_the_rest_go_out(db: TestDb) {
        common::seed(&db.store).await;
        let id = publish(db, next_start()).await;
        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        let all = addressed(db, &meetings.iter().collect::<Vec<_>>()).await;
        let root = meetings.iter().find(|m| m.parent_id.is_none()).unwrap();
        // 开滦王五, the head of the coal mine, invited to the call, the city's and the district's
        // meeting.
        let rejected = "ww@kl.example.cn".to_string();
        assert!(all.iter().any(|i| i.meeting_id == root.id && i.email == rejected));
        let (bad, good): (Vec<Invitee>, Vec<Invitee>) = all.iter().cloned().partition(|i| i.email == rejected);
        assert!(!bad.is_empty() && !good.is_empty());

        let mail = Mailroom::new(db).await;
        mail.smtp.reject_recipient(&rejected);
        mail.catch_up();
        let outcomes = mail.run().await;
        let dead: Vec<(i64, &str)> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Dead { id, kind, error } => {
                    assert_eq!(kind, "mail.send");
                    Some((*id, error.as_str()))
                }
                Outcome::Retrying { error, .. } => panic!("a 550 is not retried: {error}"),
                _ => None,
            })
            .collect();
        assert_eq!(dead.len(), bad.len(), "{outcomes:#?}");
        assert_eq!(mail.smtp.rejections(), bad.len());

        let jobs = db.store.jobs(Some("mail.send")).await.unwrap();
        assert_eq!(jobs.len(), all.len());
        for job in &jobs {
            let payload: serde_json::Value = serde_json::from_str(&job.payload).unwrap();
            let invitation = payload["invitation_id"].as_i64().unwrap();
            if bad.iter().any(|i| i.id == invitation) {
                assert_eq!((job.status.as_str(), job.attempts), ("dead", 1), "job {}", job.id);
                let error = job.last_error.as_deref().unwrap_or_default();
                assert!(error.contains(&rejected), "{error}");
                assert!(error.contains("550") || error.contains("no such user"), "{error}");
            } else {
                assert_eq!(job.status, "done", "job {}: {:?}", job.id, job.last_error);
            }
        }
        let received = by_invitation(db, mail.take()).await;
        assert_once_each(&received, &good, "the other invitations");
        assert_eq!(db.store.notifications(Some("invitation")).await.unwrap().len(), good.len());

        // Dead stays dead.
        mail.clock.advance(Duration::hours(2));
        assert!(mail.run().await.is_empty());
        assert!(mail.smtp.messages().is_empty());
    }

    async fn reminders_go_out_once_when_due(db: TestDb) {
        common::seed(&db.store).await;
        let start = next_start();
        let id = publish(db, start).await;
        let mail = Mailroom::new(db).await;
        mail.catch_up();
        mail.run_clean().await;
        let links: HashMap<i64, String> = by_invitation(db, mail.take()).await.into_iter().map(|(i, m)| (i, m.token)).collect();
        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        let all = addressed(db, &meetings.iter().collect::<Vec<_>>()).await;
        let root = meetings.iter().find(|m| m.parent_id.is_none()).unwrap();
        // Someone who declined is not reminded.
        let declined = all.iter().find(|i| i.meeting_id == root.id).unwrap().id;
        db.store.set_rsvp(declined, "declined", "test").await.unwrap();
        let all = addressed(db, &meetings.iter().collect::<Vec<_>>()).await;
        assert_eq!(all.iter().find(|i| i.id == declined).unwrap().rsvp, "declined");

        // (invitation, minutes) of the reminders due at `now` that have not gone out yet.
        let due = |now: DateTime<Utc>, sent: &HashSet<(i64, i64)>| -> HashSet<(i64, i64)> {
            let mut out = HashSet::new();
            for i in all.iter().filter(|i| i.rsvp != "declined") {
                let m = meetings.iter().find(|m| m.id == i.meeting_id).unwrap();
                for minutes in [24 * 60, 15] {
                    if m.planned_start - Duration::minutes(minutes) <= now && !sent.contains(&(i.id, minutes)) {
                        out.insert((i.id, minutes));
                    }
                }
            }
            out
        };
        let mut sent: HashSet<(i64, i64)> = HashSet::new();
        for (at, minutes_due) in [(start - Duration::hours(24), vec![24 * 60]), (start - Duration::minutes(15), vec![24 * 60, 15])] {
            mail.clock.set(at);
            let expected = due(at, &sent);
            assert!(!expected.is_empty());
            assert!(expected.iter().all(|(_, m)| minutes_due.contains(m)));
            let outcomes = mail.run_clean().await;
            assert!(done_count(&outcomes, "meeting.remind") > 0);
            let received = by_invitation(db, mail.take()).await;
            let mut got = HashSet::new();
            for (invitation, m) in &received {
                let meeting = meetings.iter().find(|x| all.iter().any(|i| i.id == *invitation && i.meeting_id == x.id)).unwrap();
                // Which reminder this is; its wording follows the time actually left (a
                // reminder that goes out late says so).
                let minutes = expected
                    .iter()
                    .find(|(i, _)| i == invitation)
                    .map(|(_, m)| *m)
                    .unwrap_or_else(|| panic!("unexpected reminder: {}", m.subject));
                let left = (meeting.planned_start - at).num_minutes();
                let lead = if left >= 90 { format!("{}小时", (left + 30) / 60) } else { format!("{left}分钟") };
                assert_eq!(m.subject, format!("【会议提醒】{} 将于{lead}后开始", meeting.title));
                assert!(m.calendar.is_none(), "a reminder changes no calendar entry");
                assert_eq!(m.token, links[invitation]);
                assert!(m.text.contains(&format!("“{}”将于 {}", meeting.title, local(meeting.planned_start, "%Y-%m-%d %H:%M"))), "{}", m.text);
                assert!(got.insert((*invitation, minutes)), "reminder {minutes} to {invitation} twice");
                assert_ne!(*invitation, declined);
            }
            assert_eq!(got, expected, "reminders at {at}");
            sent.extend(got);
            assert!(mail.run().await.is_empty(), "reminders go out once");
        }
        assert!(sent.iter().any(|(i, m)| *m == 15 && all.iter().any(|x| x.id == *i && x.meeting_id == root.id)));
    }
}

/// The test server itself, spoken to by lettre directly: dot-stuffing is undone, and its
/// switches give the replies muster's tests rely on.
#[tokio::test]
async fn the_test_smtp_server_speaks_to_lettre() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let smtp = SmtpServer::start().await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(smtp.port())
        .build();
    let message = |to: &str| {
        Message::builder()
            .from(FROM.parse().unwrap())
            .to(to.parse().unwrap())
            .subject("点号")
            .body(String::from(".first\r\nmiddle\r\n.\r\n..two\r\nlast\r\n"))
            .unwrap()
    };
    transport.send(message("a@example.cn")).await.unwrap();
    let received = smtp.take();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].from, FROM_ADDRESS);
    assert_eq!(received[0].to, vec!["a@example.cn".to_string()]);
    let data = String::from_utf8(received[0].data.clone()).unwrap();
    assert!(
        data.contains("\r\n\r\n.first\r\nmiddle\r\n.\r\n..two\r\nlast\r\n"),
        "{data}"
    );
    assert_eq!(Mail::parse_subject(&received[0]), "点号");

    smtp.refuse_next(1);
    let refused = transport.send(message("a@example.cn")).await.unwrap_err();
    assert!(refused.is_transient(), "{refused}");
    transport.send(message("a@example.cn")).await.unwrap();
    smtp.reject_recipient("Gone@Example.cn");
    let rejected = transport
        .send(message("gone@example.cn"))
        .await
        .unwrap_err();
    assert!(rejected.is_permanent(), "{rejected}");
    assert_eq!((smtp.refusals(), smtp.rejections()), (1, 1));
    assert_eq!(smtp.take().len(), 1);
}
