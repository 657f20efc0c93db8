//! The jobs that turn meeting changes into messages. A `meeting.*` job fans out to one
//! `mail.send` job per invitation; `mail.send` renders the message from the current state and
//! sends it once.
//!
//! Delivery guarantee: a message is recorded in `notifications` right after the mail server
//! (or the outbox) accepted it, and a `mail.send` job whose message is recorded does nothing.
//! So a retried job never sends twice in the normal path. If the process dies between the
//! server's acceptance and the record, the job runs again after its lease expires and the
//! message goes out a second time, with the same Message-ID, which lets mail clients fold the
//! two: at-least-once, never lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Mailer;
use super::calendar::{CalendarEntry, Method, ics};
use super::links::{link_token, new_nonce};
use super::templates::MessageTemplates;
use crate::auth::token_hash;
use crate::config::{Config, Language};
use crate::domain::agenda::{AgendaTemplate, parse_template};
use crate::jobs::{Clock, Handler, JobFailure};
use crate::store::{InvitationContext, NewJob, NewNotification, Store};

/// The messages about a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingMessage {
    Invitation,
    Update,
    Cancellation,
    Reminder,
    /// Please confirm attendance (确认参会), sent to pending invitations on request.
    ConfirmReminder,
}

impl MeetingMessage {
    fn as_str(self) -> &'static str {
        match self {
            MeetingMessage::Invitation => "invitation",
            MeetingMessage::Update => "update",
            MeetingMessage::Cancellation => "cancellation",
            MeetingMessage::Reminder => "reminder",
            MeetingMessage::ConfirmReminder => "confirm_reminder",
        }
    }
}

#[derive(Debug, Deserialize)]
struct FanOut {
    meeting_id: i64,
    sequence: Option<i64>,
    reason: Option<String>,
    minutes: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MailSend {
    invitation_id: i64,
    message: MeetingMessage,
    dedupe: String,
    reason: Option<String>,
    minutes: Option<i64>,
    /// The meeting's sequence the message was fanned out for; a later change supersedes it.
    #[serde(default)]
    sequence: Option<i64>,
}

/// Sends meeting messages; shared by the job handlers.
pub struct Notifier {
    store: Store,
    mailer: Mailer,
    templates: MessageTemplates,
    language: Language,
    public_url: String,
    from: Mailbox,
    link_key: String,
    clock: Arc<dyn Clock>,
    /// Parsed template snapshots by dispatch, for agendas.
    agendas: Mutex<HashMap<i64, Arc<AgendaTemplate>>>,
}

impl Notifier {
    pub async fn new(
        store: Store,
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<Self>> {
        let from: Mailbox = config
            .mail
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("mail.from {:?}: {e}", config.mail.from))?;
        let link_key = store
            .setting_or_insert("link_key", &super::links::new_key())
            .await?;
        Ok(Arc::new(Self {
            mailer: Mailer::from_config(&config.mail)?,
            templates: MessageTemplates::load(
                Some(config.mail.templates_dir.as_path()).filter(|d| !d.as_os_str().is_empty()),
            )?,
            language: config.language,
            public_url: config.public_url.trim_end_matches('/').to_string(),
            from,
            link_key,
            clock,
            store,
            agendas: Mutex::new(HashMap::new()),
        }))
    }

    /// The job handlers: `meeting.invite|update|cancel|remind` and `mail.send`.
    pub fn handlers(self: &Arc<Self>) -> HashMap<String, Handler> {
        let mut handlers: HashMap<String, Handler> = HashMap::new();
        for (kind, message) in [
            ("meeting.invite", MeetingMessage::Invitation),
            ("meeting.update", MeetingMessage::Update),
            ("meeting.cancel", MeetingMessage::Cancellation),
            ("meeting.remind", MeetingMessage::Reminder),
        ] {
            let me = Arc::clone(self);
            handlers.insert(
                kind.into(),
                Arc::new(move |payload| {
                    let me = Arc::clone(&me);
                    Box::pin(async move { me.fan_out(payload, message).await })
                }),
            );
        }
        let me = Arc::clone(self);
        handlers.insert(
            "followup.notify".into(),
            Arc::new(move |payload| {
                let me = Arc::clone(&me);
                Box::pin(async move { me.followup_message(payload).await })
            }),
        );
        let me = Arc::clone(self);
        handlers.insert(
            "mail.send".into(),
            Arc::new(move |payload| {
                let me = Arc::clone(&me);
                Box::pin(async move { me.send(payload).await })
            }),
        );
        handlers
    }

    /// The personal link of an invitation.
    pub fn link(&self, invitation_id: i64, nonce: &str) -> String {
        format!(
            "{}/i/{}",
            self.public_url,
            link_token(&self.link_key, invitation_id, nonce)
        )
    }

    pub fn link_key(&self) -> &str {
        &self.link_key
    }

    /// The host of `public_url`, for Message-IDs and calendar UIDs (IPv6 literals keep
    /// their brackets).
    fn domain(&self) -> String {
        let rest = self.public_url.split("://").nth(1).unwrap_or("");
        let host = match rest.strip_prefix('[') {
            Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")),
            None => rest.split(['/', ':']).next().map(str::to_string),
        };
        host.filter(|h| !h.is_empty())
            .unwrap_or_else(|| "muster".into())
    }

    async fn fan_out(
        &self,
        payload: serde_json::Value,
        message: MeetingMessage,
    ) -> Result<(), JobFailure> {
        let p: FanOut = serde_json::from_value(payload)
            .map_err(|e| JobFailure::Permanent(format!("bad payload: {e}")))?;
        let meeting = self.store.meeting(p.meeting_id).await?;
        let current =
            meeting.status == "scheduled" && p.sequence.is_none_or(|s| s == meeting.sequence);
        match message {
            // Superseded by a later change, or the meeting is off: nothing to say.
            MeetingMessage::Invitation | MeetingMessage::Update
                if meeting.status == "cancelled" =>
            {
                return Ok(());
            }
            MeetingMessage::Update | MeetingMessage::Reminder if !current => return Ok(()),
            _ => {}
        }
        let recipients = self.store.meeting_recipients(meeting.id).await?;
        let missing: Vec<(i64, String, String)> = recipients
            .iter()
            .filter(|r| r.link_nonce.is_none())
            .map(|r| {
                let nonce = new_nonce();
                let hash = token_hash(&link_token(&self.link_key, r.invitation_id, &nonce));
                (r.invitation_id, nonce, hash)
            })
            .collect();
        if !missing.is_empty() {
            self.store.set_links(&missing).await?;
        }
        let now = self.clock.now();
        let mut jobs = Vec::new();
        let mut without_address = 0;
        for r in &recipients {
            if r.email.is_none() {
                without_address += 1;
                continue;
            }
            if message == MeetingMessage::Reminder && r.rsvp == "declined" {
                continue;
            }
            let dedupe = match message {
                MeetingMessage::Invitation => format!("mail:invitation:{}", r.invitation_id),
                MeetingMessage::Update => format!(
                    "mail:update:{}:{}",
                    r.invitation_id,
                    p.sequence.unwrap_or(meeting.sequence)
                ),
                MeetingMessage::Cancellation => format!("mail:cancellation:{}", r.invitation_id),
                MeetingMessage::Reminder => {
                    format!(
                        "mail:reminder:{}:{}:{}",
                        r.invitation_id,
                        meeting.sequence,
                        p.minutes.unwrap_or(0)
                    )
                }
                // Not fanned out from a meeting job; sent per invitation on request.
                MeetingMessage::ConfirmReminder => continue,
            };
            let payload = MailSend {
                invitation_id: r.invitation_id,
                message,
                dedupe: dedupe.clone(),
                reason: p.reason.clone(),
                minutes: p.minutes,
                sequence: Some(meeting.sequence),
            };
            jobs.push(NewJob {
                kind: "mail.send".into(),
                payload: serde_json::to_value(&payload).expect("payload serializes"),
                run_at: now,
                dedupe_key: Some(format!("send:{dedupe}")),
            });
        }
        if without_address > 0 {
            tracing::warn!(
                meeting = meeting.id,
                without_address,
                "invitations without an e-mail address get no message"
            );
        }
        self.store.enqueue(&jobs).await?;
        Ok(())
    }

    fn agenda_of(
        &self,
        dispatch_id: i64,
        source: impl FnOnce() -> Option<String>,
    ) -> Option<Arc<AgendaTemplate>> {
        let mut cache = self.agendas.lock().expect("agenda cache lock");
        if let Some(t) = cache.get(&dispatch_id) {
            return Some(Arc::clone(t));
        }
        let template = Arc::new(parse_template("snapshot", &source()?).ok()?);
        cache.insert(dispatch_id, Arc::clone(&template));
        Some(template)
    }

    fn context(
        &self,
        inv: &InvitationContext,
        link: &str,
        p: &MailSend,
        template: Option<&AgendaTemplate>,
    ) -> serde_json::Value {
        let tz: chrono_tz::Tz = inv.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
        let local = |t: DateTime<Utc>, f: &str| t.with_timezone(&tz).format(f).to_string();
        let same_day = local(inv.planned_start, "%F") == local(inv.planned_end, "%F");
        let zh = self.language == Language::ZhCn;
        let role = match (inv.role.as_str(), zh) {
            ("host", true) => "主持",
            ("speaker", true) => "发言",
            ("observer", true) => "列席",
            (_, true) => "参会",
            ("host", false) => "host",
            ("speaker", false) => "speaker",
            ("observer", false) => "observer",
            (_, false) => "attendee",
        };
        // Worded from the time actually left, so a reminder sent late does not mislead.
        let lead = p.minutes.map(|_| {
            let m = (inv.planned_start - self.clock.now()).num_minutes().max(1);
            match (m >= 90, zh) {
                (true, true) => format!("{}小时", (m + 30) / 60),
                (false, true) => format!("{m}分钟"),
                (true, false) => format!("{} hours", (m + 30) / 60),
                (false, false) => format!("{m} minutes"),
            }
        });
        let agenda: Vec<serde_json::Value> = template
            .map(|t| {
                t.agenda
                    .iter()
                    .filter(|a| a.tier as i64 == inv.tier_index)
                    .map(|a| json!({"title": a.title, "minutes": a.minutes, "presenter": a.presenter}))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "recipient": {"name": inv.person_name.clone().unwrap_or_else(|| inv.unit_name.clone()), "unit": inv.unit_name},
            "meeting": {
                "title": inv.meeting_title,
                "dispatch_title": inv.dispatch_title,
                "host": inv.host_name,
                "joins_parent": inv.joins_parent,
                "parent_title": inv.parent_title,
                "start_local": local(inv.planned_start, "%Y-%m-%d %H:%M"),
                "end_local": local(inv.planned_end, if same_day { "%H:%M" } else { "%Y-%m-%d %H:%M" }),
                "timezone": inv.timezone,
                "agenda": agenda,
            },
            "role": role,
            "link": link,
            "sender": self.from.name.clone().unwrap_or_else(|| self.from.email.to_string()),
            "reason": p.reason.clone().filter(|r| !r.is_empty()).or_else(|| inv.cancel_reason.clone()),
            "lead": lead,
        })
    }

    /// A follow-up message: to the assignee unit, or for an escalation to the assignee's
    /// superior unit and the assigning unit.
    async fn followup_message(&self, payload: serde_json::Value) -> Result<(), JobFailure> {
        #[derive(Deserialize)]
        struct P {
            followup_id: i64,
            message: String,
            key: String,
        }
        let p: P = serde_json::from_value(payload)
            .map_err(|e| JobFailure::Permanent(format!("bad payload: {e}")))?;
        let f = self.store.followup(p.followup_id).await?;
        let status: crate::domain::followup::Status = f
            .status()
            .map_err(|e| JobFailure::Permanent(e.to_string()))?;
        // Reminders and escalations about something already done are not sent.
        if p.message != "followup_assigned" && p.message != "followup_returned" && status.is_final()
        {
            return Ok(());
        }
        let mut units = vec![f.assignee_unit_id];
        if p.message == "followup_escalation" {
            let assignee = self.store.unit(f.assignee_unit_id).await?;
            units = assignee
                .parent_id
                .into_iter()
                .chain([f.assigner_unit_id])
                .collect();
            units.dedup();
        }
        let tz = chrono_tz::Asia::Shanghai;
        let now = self.clock.now();
        let last_text = self
            .store
            .followup_events(f.id)
            .await?
            .into_iter()
            .rev()
            .find(|e| e.action == "return")
            .map(|e| e.text);
        let mut addresses: Vec<String> = Vec::new();
        for unit in units {
            let Some((name, address)) = self.store.unit_address(unit).await? else {
                tracing::warn!(unit, followup = f.id, "no address for a follow-up message");
                continue;
            };
            if addresses.contains(&address) {
                continue;
            }
            addresses.push(address.clone());
            let dedupe = format!("mail:{}:{address}", p.key);
            if self.store.notification_sent(&dedupe).await? {
                continue;
            }
            let context = json!({
                "recipient": {"name": name},
                "followup": {
                    "title": f.title,
                    "description": (!f.description.is_empty()).then_some(&f.description),
                    "due_local": f.due_at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string(),
                    "status": if self.language == Language::ZhCn { status.label_zh() } else { status.as_str() },
                    "days_overdue": crate::domain::followup::days_overdue(f.due_at, now),
                    "assigner": f.assigner_name,
                    "assignee": f.assignee_name,
                },
                "link": format!("{}/followups/{}", self.public_url, f.id),
                "sender": self.from.name.clone().unwrap_or_else(|| self.from.email.to_string()),
                "reason": last_text,
            });
            let rendered = self
                .templates
                .render(self.language, &p.message, &context)
                .map_err(|e| JobFailure::Permanent(e.to_string()))?;
            let to: Address = address.parse().map_err(|e| {
                JobFailure::Permanent(format!("invalid e-mail address {address:?} of {name}: {e}"))
            })?;
            let message_id = format!("<{}@{}>", dedupe.replace([':', '@'], "."), self.domain());
            let message = Message::builder()
                .from(self.from.clone())
                .to(Mailbox::new(Some(name.clone()), to))
                .subject(&rendered.subject)
                .message_id(Some(message_id.clone()))
                .singlepart(SinglePart::plain(rendered.body))
                .map_err(|e| {
                    JobFailure::Permanent(format!("cannot build the message to {address}: {e}"))
                })?;
            self.deliver(
                message,
                &name,
                NewNotification {
                    dedupe_key: dedupe,
                    kind: p.message.clone(),
                    invitation_id: None,
                    recipient: address.clone(),
                    subject: rendered.subject,
                    message_id,
                    sent_at: now,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Sends a built message and records it, so that a retried job does not send it again.
    /// A refusal for good (5xx) makes the job dead, naming the address.
    async fn deliver(
        &self,
        message: Message,
        who: &str,
        record: NewNotification,
    ) -> Result<(), JobFailure> {
        self.mailer.send(message).await.map_err(|e| {
            let text = format!(
                "sending to {} ({who}) failed: {}",
                record.recipient, e.message
            );
            if e.permanent {
                JobFailure::Permanent(text)
            } else {
                JobFailure::Retry(text)
            }
        })?;
        self.store.record_notification(&record).await?;
        Ok(())
    }

    async fn send(&self, payload: serde_json::Value) -> Result<(), JobFailure> {
        let p: MailSend = serde_json::from_value(payload)
            .map_err(|e| JobFailure::Permanent(format!("bad payload: {e}")))?;
        if self.store.notification_sent(&p.dedupe).await? {
            return Ok(());
        }
        let inv = self.store.invitation_context(p.invitation_id).await?;
        // The meeting may have changed since the fan-out: say nothing outdated.
        let superseded = p.sequence.is_some_and(|s| s != inv.sequence);
        let skip = match p.message {
            MeetingMessage::Invitation => inv.meeting_status == "cancelled",
            MeetingMessage::Update => inv.meeting_status == "cancelled" || superseded,
            MeetingMessage::Reminder => {
                inv.meeting_status != "scheduled"
                    || superseded
                    || self.clock.now() >= inv.planned_start
            }
            MeetingMessage::Cancellation => false,
            MeetingMessage::ConfirmReminder => {
                inv.meeting_status != "scheduled" || inv.rsvp != "pending"
            }
        };
        if skip {
            return Ok(());
        }
        let who = inv.display_name();
        let address_text = inv
            .email()
            .ok_or_else(|| JobFailure::Permanent(format!("no e-mail address for {who}")))?
            .to_string();
        let address: Address = address_text.parse().map_err(|e| {
            JobFailure::Permanent(format!(
                "invalid e-mail address {address_text:?} of {who}: {e}"
            ))
        })?;
        let nonce = inv
            .link_nonce
            .clone()
            .ok_or_else(|| JobFailure::Retry(format!("invitation {} has no link yet", inv.id)))?;
        let link = self.link(inv.id, &nonce);
        let store = self.store.clone();
        let dispatch_id = inv.dispatch_id;
        let source = store.dispatch_template_source(dispatch_id).await.ok();
        let template = self.agenda_of(dispatch_id, || source);
        let context = self.context(&inv, &link, &p, template.as_deref());
        let rendered = self
            .templates
            .render(self.language, p.message.as_str(), &context)
            .map_err(|e| JobFailure::Permanent(e.to_string()))?;
        let domain = self.domain();
        let message_id = format!("<{}@{domain}>", p.dedupe.replace(':', "."));
        let builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(Some(who.clone()), address))
            .subject(&rendered.subject)
            .message_id(Some(message_id.clone()));
        let calendar = match p.message {
            MeetingMessage::Reminder | MeetingMessage::ConfirmReminder => None,
            MeetingMessage::Cancellation => Some(Method::Cancel),
            _ => Some(Method::Request),
        };
        let message = match calendar {
            None => builder.singlepart(SinglePart::plain(rendered.body.clone())),
            Some(method) => {
                let tz: chrono_tz::Tz = inv.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
                let uid = format!("meeting-{}@{domain}", inv.meeting_id);
                let location = if self.language == Language::ZhCn {
                    "视频会议（使用个人链接入会）"
                } else {
                    "Video meeting (join with your personal link)"
                };
                let text = ics(&CalendarEntry {
                    method,
                    uid: &uid,
                    sequence: u32::try_from(inv.sequence).unwrap_or(0),
                    summary: &inv.meeting_title,
                    description: &rendered.body,
                    location,
                    starts_at: inv.planned_start,
                    ends_at: inv.planned_end,
                    timezone: tz,
                    organizer_name: self.from.name.as_deref().unwrap_or("muster"),
                    organizer_email: self.from.email.as_ref(),
                    attendee_name: &who,
                    attendee_email: &address_text,
                    url: &link,
                    stamp: self.clock.now(),
                });
                let method_name = if method == Method::Cancel {
                    "CANCEL"
                } else {
                    "REQUEST"
                };
                let calendar_type = ContentType::parse(&format!(
                    "text/calendar; charset=utf-8; method={method_name}"
                ))
                .expect("valid content type");
                builder.multipart(
                    MultiPart::alternative()
                        .singlepart(SinglePart::plain(rendered.body.clone()))
                        .singlepart(SinglePart::builder().header(calendar_type).body(text)),
                )
            }
        }
        .map_err(|e| {
            JobFailure::Permanent(format!("cannot build the message to {address_text}: {e}"))
        })?;
        self.deliver(
            message,
            &who,
            NewNotification {
                dedupe_key: p.dedupe.clone(),
                kind: p.message.as_str().into(),
                invitation_id: Some(inv.id),
                recipient: address_text,
                subject: rendered.subject,
                message_id,
                sent_at: self.clock.now(),
            },
        )
        .await?;
        Ok(())
    }
}
