//! Agenda templates (`agendas/*.toml`): parsing and validation. A template describes the
//! tiers of a cascade, whom each tier invites, when it meets, its agenda and the action items
//! it pre-fills. The format is documented in `agendas/README.md`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use chrono::NaiveTime;
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

use super::org::{Level, PersonRole, Sector};

/// A length of time written like `90m`, `2h`, `1h 30m` or `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub chrono::Duration);

impl Span {
    pub fn minutes(self) -> i64 {
        self.0.num_minutes()
    }
}

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let std = humantime::parse_duration(s.trim())
            .map_err(|e| format!("bad duration {s:?}: {e}; write it like 90m, 2h, 1h30m or 7d"))?;
        let d =
            chrono::Duration::from_std(std).map_err(|_| format!("duration {s:?} is too long"))?;
        Ok(Span(d))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let minutes = self.0.num_minutes();
        match (minutes / 60, minutes % 60) {
            (0, m) => write!(f, "{m}m"),
            (h, 0) if h % 24 == 0 => write!(f, "{}d", h / 24),
            (h, 0) => write!(f, "{h}h"),
            (h, m) => write!(f, "{h}h{m}m"),
        }
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// When a tier's meetings start, relative to the meeting of the parent tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRule {
    /// Sub-venues (分会场): the unit joins the parent meeting live, in its room.
    WithParent,
    /// A follow-on meeting this long after the parent meeting ends.
    AfterParent(Span),
    /// A follow-on meeting on the first working day (Mon–Fri) after the parent's day.
    NextWorkday(NaiveTime),
}

const START_FORMS: &str = "with_parent, after_parent, after_parent + 2h, next_workday 09:00";

impl FromStr for StartRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if text == "with_parent" {
            return Ok(StartRule::WithParent);
        }
        if let Some(rest) = text.strip_prefix("after_parent") {
            let rest = rest.trim();
            if rest.is_empty() {
                return Ok(StartRule::AfterParent(Span(chrono::Duration::zero())));
            }
            let offset = rest
                .strip_prefix('+')
                .ok_or_else(|| format!("bad start {s:?}: expected `after_parent + DURATION`"))?;
            return Ok(StartRule::AfterParent(offset.parse()?));
        }
        if let Some(rest) = text.strip_prefix("next_workday") {
            let time = NaiveTime::parse_from_str(rest.trim(), "%H:%M").map_err(|_| {
                format!("bad start {s:?}: expected `next_workday HH:MM`, e.g. next_workday 09:00")
            })?;
            return Ok(StartRule::NextWorkday(time));
        }
        Err(format!("bad start {s:?}: expected one of {START_FORMS}"))
    }
}

impl fmt::Display for StartRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartRule::WithParent => f.write_str("with_parent"),
            StartRule::AfterParent(span) => write!(f, "after_parent + {span}"),
            StartRule::NextWorkday(t) => write!(f, "next_workday {}", t.format("%H:%M")),
        }
    }
}

impl Serialize for StartRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StartRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Role of an invitee in a meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingRole {
    Host,
    Speaker,
    Attendee,
    Observer,
}

impl MeetingRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MeetingRole::Host => "host",
            MeetingRole::Speaker => "speaker",
            MeetingRole::Attendee => "attendee",
            MeetingRole::Observer => "observer",
        }
    }

    /// Whether this role publishes audio/video unless the template says otherwise. Most of a
    /// large call only listens (see LIVEKIT.md, "Scale").
    pub fn publishes_by_default(self) -> bool {
        matches!(self, MeetingRole::Host | MeetingRole::Speaker)
    }
}

impl FromStr for MeetingRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(MeetingRole::Host),
            "speaker" => Ok(MeetingRole::Speaker),
            "attendee" => Ok(MeetingRole::Attendee),
            "observer" => Ok(MeetingRole::Observer),
            other => Err(format!("unknown meeting role {other:?}")),
        }
    }
}

/// Which enterprises an invite group reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SectorFilter {
    /// The template's sector (or every sector if the template has none).
    Template,
    Any,
    Only(Sector),
}

/// Whom a meeting of a tier invites: units of one level in the host's subtree, and in each
/// such unit the people with one of `roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InviteGroup {
    pub level: Level,
    pub sector: SectorFilter,
    pub roles: Vec<PersonRole>,
    pub role: MeetingRole,
    pub publish: bool,
    /// Only the units chosen when the dispatch is planned (e.g. the enterprise inspected).
    pub chosen: bool,
    /// Most units that may be chosen.
    pub max: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tier {
    pub id: String,
    /// Index of the parent tier; `None` for the first tier.
    pub parent: Option<usize>,
    /// Level of the host units (for a first tier that accepts several, the lowest of them).
    pub host: Level,
    /// Levels the host may have: one, except for a first tier written with a list.
    pub host_levels: Vec<Level>,
    /// Skip host units with no enterprise of the template's sector in their subtree.
    pub require_enterprises: bool,
    pub title: Option<String>,
    /// `None` for the first tier, which starts when the dispatch says.
    pub start: Option<StartRule>,
    /// Length of the tier's own meetings; sub-venues last as long as the call they join.
    pub duration: Span,
    /// How far a host may move its own meeting from the planned start, earlier or later.
    pub move_within: Span,
    /// People of the host unit who attend as hosts.
    pub host_roles: Vec<PersonRole>,
    pub invite: Vec<InviteGroup>,
    pub record: bool,
}

impl Tier {
    pub fn joins_parent(&self) -> bool {
        self.start == Some(StartRule::WithParent)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgendaItem {
    pub tier: usize,
    pub title: String,
    pub minutes: u32,
    pub presenter: Option<String>,
}

/// To whom a pre-filled action item is assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignees {
    /// Every unit invited to the meeting.
    InvitedUnits,
    /// The host units of one tier's meetings.
    Tier(String),
    /// Units chosen by the convener when the item is issued.
    Chosen,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionTemplate {
    pub title: String,
    pub description: Option<String>,
    pub assign: Assignees,
    /// Due this long after the meeting ends.
    pub due: Span,
    pub delegable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgendaTemplate {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub sector: Option<Sector>,
    pub timezone: chrono_tz::Tz,
    pub tiers: Vec<Tier>,
    pub agenda: Vec<AgendaItem>,
    pub actions: Vec<ActionTemplate>,
    /// Reminders before each meeting.
    pub reminders: Vec<Span>,
    /// The template's text, kept with each dispatch built from it.
    #[serde(skip)]
    pub source: String,
}

// ---- the file format, as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    id: Spanned<String>,
    title: String,
    description: Option<String>,
    sector: Option<Sector>,
    timezone: Option<Spanned<String>>,
    reminders: Option<Vec<Span>>,
    tiers: Spanned<Vec<RawTier>>,
    #[serde(default)]
    agenda: Vec<RawAgendaItem>,
    #[serde(default)]
    actions: Vec<RawAction>,
}

/// `host = "city"`, or for the first tier a list of the levels the dispatch's root unit may
/// have: `host = ["city", "district"]`.
struct HostSpec(Vec<Level>);

impl<'de> Deserialize<'de> for HostSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HostSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a level (province, city, district) or a list of levels")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HostSpec, E> {
                v.parse::<Level>()
                    .map(|l| HostSpec(vec![l]))
                    .map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HostSpec, A::Error> {
                let mut levels = Vec::new();
                while let Some(level) = seq.next_element::<String>()? {
                    levels.push(level.parse::<Level>().map_err(serde::de::Error::custom)?);
                }
                Ok(HostSpec(levels))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    id: Option<Spanned<String>>,
    parent: Option<Spanned<String>>,
    host: Spanned<HostSpec>,
    title: Option<String>,
    start: Option<Spanned<StartRule>>,
    duration: Option<Spanned<Span>>,
    #[serde(default)]
    require_enterprises: bool,
    move_within: Option<Spanned<Span>>,
    host_roles: Option<Spanned<Vec<PersonRole>>>,
    invite: Spanned<Vec<RawInvite>>,
    #[serde(default)]
    record: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInvite {
    level: Spanned<Level>,
    sector: Option<Spanned<String>>,
    roles: Spanned<Vec<PersonRole>>,
    role: Option<Spanned<MeetingRole>>,
    publish: Option<bool>,
    #[serde(default)]
    chosen: bool,
    max: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgendaItem {
    title: String,
    minutes: Spanned<u32>,
    presenter: Option<String>,
    tier: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    title: String,
    description: Option<String>,
    assign: Spanned<String>,
    due: Spanned<Span>,
    #[serde(default = "yes")]
    delegable: bool,
}

fn yes() -> bool {
    true
}

/// A problem in a template file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateError {}

struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) -> TemplateError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        TemplateError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }
}

/// A hint for the usual mistakes, by what the message says.
fn hint_for(message: &str) -> Option<&'static str> {
    if message.contains("unknown field") {
        Some(
            "see agendas/README.md for the keys a template, a tier, an invite group, an agenda item and an action may have",
        )
    } else if message.contains("variant") && message.contains("province") {
        Some("levels are province, city, district, enterprise")
    } else if message.contains("variant") && message.contains("principal") {
        Some("person roles are principal, deputy, safety_head, supervisor, liaison")
    } else if message.contains("variant") && message.contains("coal_mine") {
        Some("sectors are coal_mine, non_coal_mine, industry_trade")
    } else if message.contains("variant") && message.contains("attendee") {
        Some("meeting roles are host, speaker, attendee, observer")
    } else if message.contains("bad duration") {
        Some("durations look like 90m, 2h, 1h30m or 7d")
    } else if message.contains("bad start") {
        Some("start is one of: with_parent, after_parent + 2h, next_workday 09:00")
    } else if message.contains("missing field") {
        Some("see agendas/README.md for the required keys")
    } else {
        None
    }
}

/// Parses and validates one template file. `file` names it in errors.
pub fn parse_template(file: &str, text: &str) -> Result<AgendaTemplate, TemplateError> {
    let src = Source { file, text };
    let raw: RawTemplate = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        let hint = hint_for(&message);
        src.error(e.span().unwrap_or(0..0), message, hint)
    })?;
    validate(&src, raw)
}

fn validate(src: &Source, raw: RawTemplate) -> Result<AgendaTemplate, TemplateError> {
    let id = raw.id.get_ref().trim().to_string();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(src.error(
            raw.id.span(),
            format!("bad template id {id:?}"),
            Some("use lowercase letters, digits and '-', e.g. coal-mine-resumption"),
        ));
    }
    let timezone = match &raw.timezone {
        None => chrono_tz::Asia::Shanghai,
        Some(tz) => tz.get_ref().parse().map_err(|_| {
            src.error(
                tz.span(),
                format!("unknown time zone {:?}", tz.get_ref()),
                Some("use an IANA name such as Asia/Shanghai"),
            )
        })?,
    };
    if raw.tiers.get_ref().is_empty() {
        return Err(src.error(
            raw.tiers.span(),
            "a template needs at least one tier",
            Some("add a [[tiers]] table for the meeting the dispatch starts with"),
        ));
    }

    let mut tiers: Vec<Tier> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (index, t) in raw.tiers.into_inner().into_iter().enumerate() {
        let host_levels = t.host.get_ref().0.clone();
        let (Some(&shallowest), Some(&host)) = (host_levels.iter().min(), host_levels.iter().max())
        else {
            return Err(src.error(
                t.host.span(),
                "host is an empty list",
                Some("name the level that hosts this tier's meetings"),
            ));
        };
        if host == Level::Enterprise {
            return Err(src.error(
                t.host.span(),
                "enterprises do not host meetings",
                Some("hosts are province, city or district bureaus"),
            ));
        }
        if index > 0 && host_levels.len() > 1 {
            return Err(src.error(
                t.host.span(),
                "only the first tier may name several host levels",
                Some("write one level, e.g. host = \"city\""),
            ));
        }
        let id = match &t.id {
            Some(id) => id.get_ref().trim().to_string(),
            None => host.as_str().to_string(),
        };
        if let Some(first) = ids.get(&id) {
            let span = t.id.as_ref().map_or(t.host.span(), |s| s.span());
            return Err(src.error(
                span,
                format!("tier id {id:?} is used twice (first by tier {})", first + 1),
                Some("give each tier a distinct `id` when two tiers have the same host level"),
            ));
        }
        let parent = match (index, &t.parent) {
            (0, Some(p)) => {
                return Err(src.error(
                    p.span(),
                    "the first tier has no parent",
                    Some("remove `parent` from the first tier"),
                ));
            }
            (0, None) => None,
            (_, Some(p)) => Some(*ids.get(p.get_ref().trim()).ok_or_else(|| {
                src.error(
                    p.span(),
                    format!("unknown parent tier {:?}", p.get_ref()),
                    Some("a parent must be the id of a tier listed before this one"),
                )
            })?),
            (_, None) => Some(index - 1),
        };
        let start = t.start.as_ref().map(|s| *s.get_ref());
        match (parent, &t.start) {
            (None, Some(s)) => {
                return Err(src.error(
                    s.span(),
                    "the first tier starts when the dispatch says",
                    Some("remove `start` from the first tier"),
                ));
            }
            (Some(_), None) => {
                return Err(src.error(
                    t.host.span(),
                    format!("tier {id:?} has no `start`"),
                    Some("start is one of: with_parent, after_parent + 2h, next_workday 09:00"),
                ));
            }
            _ => {}
        }
        if let Some(p) = parent {
            let parent_host = tiers[p].host;
            if host < parent_host {
                return Err(src.error(
                    t.host.span(),
                    format!("tier {id:?} is hosted by the {host} level, above its parent tier {:?} ({parent_host})", tiers[p].id),
                    Some("a tier's host level must be the same as its parent's or below it"),
                ));
            }
            if host == parent_host && start == Some(StartRule::WithParent) {
                return Err(src.error(
                    t.start.as_ref().expect("checked").span(),
                    format!(
                        "tier {id:?} joins its parent live but is hosted by the same level ({host})"
                    ),
                    Some("sub-venues (with_parent) are hosted by a level below the parent's"),
                ));
            }
        }
        let duration = match (&t.duration, start) {
            (Some(d), Some(StartRule::WithParent)) => {
                return Err(src.error(
                    d.span(),
                    "a sub-venue lasts as long as the call it joins",
                    Some("remove `duration` from a with_parent tier"),
                ));
            }
            (None, Some(StartRule::WithParent)) => tiers[parent.expect("non-first tier")].duration,
            (None, _) => {
                return Err(src.error(
                    t.host.span(),
                    format!("tier {id:?} has no `duration`"),
                    Some("write it like duration = \"60m\""),
                ));
            }
            (Some(d), _) => {
                let duration = *d.get_ref();
                if duration.0 <= chrono::Duration::zero()
                    || duration.0 > chrono::Duration::hours(24)
                {
                    return Err(src.error(
                        d.span(),
                        format!("duration {duration} is out of range"),
                        Some("a meeting lasts more than 0 minutes and at most 24h"),
                    ));
                }
                duration
            }
        };
        let move_within = match &t.move_within {
            Some(m) if m.get_ref().0 > chrono::Duration::days(7) => {
                return Err(src.error(
                    m.span(),
                    "move_within is longer than 7d",
                    Some("a host may move its meeting by at most 7 days"),
                ));
            }
            Some(m) => *m.get_ref(),
            None => Span(chrono::Duration::zero()),
        };
        let host_roles = match &t.host_roles {
            Some(r) if r.get_ref().is_empty() => {
                return Err(src.error(
                    r.span(),
                    "host_roles is empty",
                    Some("name the roles of the host unit's people who host, e.g. [\"principal\"]"),
                ));
            }
            Some(r) => r.get_ref().clone(),
            None => vec![PersonRole::Principal],
        };
        if t.invite.get_ref().is_empty() {
            return Err(src.error(
                t.invite.span(),
                format!("tier {id:?} invites nobody"),
                Some("add invite groups, e.g. invite = [{ level = \"district\", roles = [\"deputy\"] }]"),
            ));
        }
        let mut invite = Vec::new();
        for g in t.invite.into_inner() {
            invite.push(invite_group(src, &id, shallowest, g)?);
        }
        ids.insert(id.clone(), index);
        if t.require_enterprises && raw.sector.is_none() {
            return Err(src.error(
                t.host.span(),
                "require_enterprises needs the template's `sector`",
                Some("add sector = \"coal_mine\" (or another sector) at the top of the template"),
            ));
        }
        tiers.push(Tier {
            id,
            parent,
            host,
            host_levels,
            require_enterprises: t.require_enterprises,
            title: t.title,
            start,
            duration,
            move_within,
            host_roles,
            invite,
            record: t.record,
        });
    }

    let mut agenda = Vec::new();
    let mut minutes_per_tier: HashMap<usize, (u32, Range<usize>)> = HashMap::new();
    for item in raw.agenda {
        let tier = match &item.tier {
            None => 0,
            Some(t) => *ids.get(t.get_ref().trim()).ok_or_else(|| {
                src.error(
                    t.span(),
                    format!("unknown tier {:?}", t.get_ref()),
                    Some("an agenda item's tier is the id of a tier of this template"),
                )
            })?,
        };
        let minutes = *item.minutes.get_ref();
        if minutes == 0 {
            return Err(src.error(
                item.minutes.span(),
                "an agenda item takes at least 1 minute",
                None,
            ));
        }
        let entry = minutes_per_tier
            .entry(tier)
            .or_insert((0, item.minutes.span()));
        entry.0 += minutes;
        entry.1 = item.minutes.span();
        agenda.push(AgendaItem {
            tier,
            title: item.title,
            minutes,
            presenter: item.presenter,
        });
    }
    for (tier, (total, span)) in &minutes_per_tier {
        let limit = tiers[*tier].duration;
        if i64::from(*total) > limit.minutes() {
            return Err(src.error(
                span.clone(),
                format!("the agenda of tier {:?} takes {total} minutes, longer than its duration {limit}", tiers[*tier].id),
                Some("shorten the agenda items or lengthen the tier's duration"),
            ));
        }
    }

    let mut actions = Vec::new();
    for a in raw.actions {
        let text = a.assign.get_ref().trim();
        let assign = match text {
            "invited_units" => Assignees::InvitedUnits,
            "chosen" => Assignees::Chosen,
            other => match other.strip_prefix("tier:") {
                Some(t) if ids.contains_key(t.trim()) => Assignees::Tier(t.trim().to_string()),
                _ => {
                    return Err(src.error(
                        a.assign.span(),
                        format!("bad assign {text:?}"),
                        Some("assign is invited_units, chosen, or tier:<tier id>"),
                    ));
                }
            },
        };
        let due = *a.due.get_ref();
        if due.0 <= chrono::Duration::zero() {
            return Err(src.error(
                a.due.span(),
                "due must be after the meeting",
                Some("write it like 3d or 7d"),
            ));
        }
        actions.push(ActionTemplate {
            title: a.title,
            description: a.description,
            assign,
            due,
            delegable: a.delegable,
        });
    }

    let reminders = raw.reminders.unwrap_or_else(|| {
        vec![
            Span(chrono::Duration::hours(24)),
            Span(chrono::Duration::minutes(15)),
        ]
    });

    Ok(AgendaTemplate {
        id,
        title: raw.title,
        description: raw.description,
        sector: raw.sector,
        timezone,
        tiers,
        agenda,
        actions,
        reminders,
        source: src.text.to_string(),
    })
}

fn invite_group(
    src: &Source,
    tier: &str,
    host: Level,
    g: RawInvite,
) -> Result<InviteGroup, TemplateError> {
    let level = *g.level.get_ref();
    if level <= host {
        return Err(src.error(
            g.level.span(),
            format!(
                "tier {tier:?} is hosted by the {host} level and cannot invite the {level} level"
            ),
            Some("a meeting invites units below its host, in the host's subtree"),
        ));
    }
    let sector = match &g.sector {
        None => SectorFilter::Template,
        Some(s) if level != Level::Enterprise => {
            return Err(src.error(
                s.span(),
                format!("only enterprises have sectors; this group invites the {level} level"),
                Some("remove `sector` from this invite group"),
            ));
        }
        Some(s) if s.get_ref() == "any" => SectorFilter::Any,
        Some(s) => SectorFilter::Only(s.get_ref().parse().map_err(|e: String| {
            src.error(
                s.span(),
                e,
                Some("sectors are coal_mine, non_coal_mine, industry_trade, or any"),
            )
        })?),
    };
    if g.roles.get_ref().is_empty() {
        return Err(src.error(
            g.roles.span(),
            "roles is empty",
            Some("name the roles to invite in each unit, e.g. [\"principal\", \"safety_head\"]"),
        ));
    }
    let role = g
        .role
        .as_ref()
        .map_or(MeetingRole::Attendee, |r| *r.get_ref());
    if role == MeetingRole::Host {
        return Err(src.error(
            g.role.as_ref().expect("checked").span(),
            "invited units cannot be hosts",
            Some("the host unit's people are named by the tier's host_roles; invitees are speaker, attendee or observer"),
        ));
    }
    let publish = g.publish.unwrap_or(role.publishes_by_default());
    if role == MeetingRole::Observer && publish {
        return Err(src.error(
            g.level.span(),
            "observers never publish",
            Some("remove `publish = true` or make the group attendees"),
        ));
    }
    if g.max.is_some() && !g.chosen {
        return Err(src.error(
            g.level.span(),
            "`max` only applies to chosen units",
            Some("add `chosen = true` or remove `max`"),
        ));
    }
    Ok(InviteGroup {
        level,
        sector,
        roles: g.roles.into_inner(),
        role,
        publish,
        chosen: g.chosen,
        max: g.max,
    })
}

/// Every template of a folder, by id.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    pub templates: Vec<AgendaTemplate>,
}

impl TemplateSet {
    /// Validates `(file name, text)` pairs; returns every error, not only the first.
    pub fn parse(files: &[(String, String)]) -> Result<Self, Vec<TemplateError>> {
        let mut templates: Vec<AgendaTemplate> = Vec::new();
        let mut errors = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (file, text) in files {
            match parse_template(file, text) {
                Ok(t) => {
                    if let Some(other) = seen.get(&t.id) {
                        let at = text.find(&format!("\"{}\"", t.id)).unwrap_or(0);
                        let src = Source { file, text };
                        errors.push(src.error(
                            at..at,
                            format!("template id {:?} is also used by {other}", t.id),
                            Some("template ids must be unique across the folder"),
                        ));
                    } else {
                        seen.insert(t.id.clone(), file.clone());
                        templates.push(t);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            templates.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Self { templates })
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, id: &str) -> Option<&AgendaTemplate> {
        self.templates.iter().find(|t| t.id == id)
    }

    pub fn ids(&self) -> HashSet<&str> {
        self.templates.iter().map(|t| t.id.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("agendas");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn shipped_templates_are_valid() {
        let set = TemplateSet::parse(&shipped()).unwrap_or_else(|errors| {
            panic!(
                "{}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        let ids: Vec<&str> = set.templates.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "coal-mine-resumption",
                "industry-trade-resumption",
                "non-coal-mine-resumption",
                "remote-safety-inspection"
            ]
        );
        let coal = set.get("coal-mine-resumption").unwrap();
        assert_eq!(coal.sector, Some(Sector::CoalMine));
        let venue = &coal.tiers[1];
        assert!(venue.joins_parent());
        assert_eq!(
            venue.duration, coal.tiers[0].duration,
            "a sub-venue lasts as long as its call"
        );
        assert_eq!(coal.tiers[2].parent, Some(0));
        assert_eq!(
            coal.tiers[2].start,
            Some(StartRule::AfterParent("2h".parse().unwrap()))
        );
        assert_eq!(
            coal.tiers[3].start,
            Some(StartRule::NextWorkday(
                NaiveTime::from_hms_opt(9, 0, 0).unwrap()
            ))
        );
        let inspection = set.get("remote-safety-inspection").unwrap();
        assert_eq!(
            inspection.tiers[0].host_levels,
            vec![Level::City, Level::District]
        );
        assert!(inspection.tiers[0].record);
        assert!(inspection.tiers[0].invite[0].chosen);
        assert_eq!(inspection.tiers[0].invite[0].sector, SectorFilter::Any);
    }

    const GOOD: &str = r#"id = "t"
title = "测试"
sector = "coal_mine"

[[tiers]]
host = "province"
duration = "60m"
invite = [{ level = "city", roles = ["deputy"] }]

[[tiers]]
host = "city"
start = "after_parent + 1h"
duration = "30m"
invite = [{ level = "enterprise", roles = ["principal"] }]
"#;

    /// Replaces `from` in the good template and returns the error.
    fn broken(from: &str, to: &str) -> TemplateError {
        assert!(GOOD.contains(from), "{from}");
        parse_template("agendas/t.toml", &GOOD.replacen(from, to, 1)).unwrap_err()
    }

    #[test]
    fn the_good_template_parses() {
        let t = parse_template("t.toml", GOOD).unwrap();
        assert_eq!(t.tiers.len(), 2);
        assert_eq!(t.tiers[1].invite[0].sector, SectorFilter::Template);
        assert!(!t.tiers[1].invite[0].publish, "attendees listen by default");
    }

    #[test]
    fn errors_carry_file_line_column_and_hint() {
        let e = broken("duration = \"60m\"", "duration = \"60m\"\ncolour = \"red\"");
        assert_eq!((e.line, e.column), (8, 1), "{e}");
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        assert!(e.to_string().starts_with("agendas/t.toml:8:1: "), "{e}");
        assert!(e.hint.is_some());

        let e = broken("duration = \"30m\"", "duration = \"half an hour\"");
        assert_eq!(e.line, 13, "{e}");
        assert!(e.message.contains("bad duration"), "{e}");
        assert!(e.hint.unwrap().contains("90m"));

        let e = broken("host = \"city\"", "host = \"town\"");
        assert_eq!((e.line, e.column), (11, 8), "{e}");
        assert!(e.message.contains("unknown level \"town\""), "{e}");

        let e = broken("roles = [\"principal\"]", "roles = [\"boss\"]");
        assert!(e.message.contains("boss"), "{e}");
        assert_eq!(e.line, 14);

        let e = broken("sector = \"coal_mine\"", "sector = \"coal\"");
        assert_eq!(e.line, 3);
        assert!(e.hint.unwrap().contains("coal_mine"));

        let e = broken(
            "{ level = \"enterprise\", roles",
            "{ level = \"city\", roles",
        );
        assert!(
            e.message
                .contains("hosted by the city level and cannot invite the city level"),
            "{e}"
        );
        assert_eq!(e.line, 14);

        let e = broken(
            "[[tiers]]\nhost = \"city\"",
            "[[tiers]]\nhost = \"city\"\nparent = \"nope\"",
        );
        assert!(e.message.contains("unknown parent tier \"nope\""), "{e}");

        let e = broken(
            "invite = [{ level = \"enterprise\", roles = [\"principal\"] }]",
            "invite = []",
        );
        assert_eq!(e.line, 14, "{e}");
        assert!(e.message.contains("invites nobody"), "{e}");

        let e = broken("start = \"after_parent + 1h\"", "start = \"later\"");
        assert!(e.message.contains("bad start"), "{e}");
        assert!(e.hint.unwrap().contains("next_workday"));
    }

    #[test]
    fn a_tier_hosted_above_its_parent_is_refused() {
        let text = GOOD
            .replacen("host = \"province\"", "host = \"city\"", 1)
            .replacen(
                "{ level = \"city\", roles",
                "{ level = \"district\", roles",
                1,
            )
            .replacen("host = \"city\"\nstart", "host = \"province\"\nstart", 1);
        let e = parse_template("t.toml", &text).unwrap_err();
        assert_eq!(e.line, 11, "{e}");
        assert!(e.message.contains("above its parent tier"), "{e}");
    }

    #[test]
    fn an_agenda_longer_than_the_meeting_is_refused() {
        let text = format!(
            "{GOOD}\n[[agenda]]\ntitle = \"a\"\nminutes = 40\n\n[[agenda]]\ntitle = \"b\"\nminutes = 30\n"
        );
        let e = parse_template("t.toml", &text).unwrap_err();
        assert!(
            e.message
                .contains("70 minutes, longer than its duration 1h"),
            "{e}"
        );
        assert_eq!(e.line, 22);
    }

    #[test]
    fn duplicate_ids_across_files_are_reported() {
        let files = vec![
            ("a.toml".to_string(), GOOD.to_string()),
            ("b.toml".to_string(), GOOD.to_string()),
        ];
        let errors = TemplateSet::parse(&files).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().starts_with("b.toml:1:"),
            "{}",
            errors[0]
        );
        assert!(errors[0].message.contains("also used by a.toml"));
    }

    #[test]
    fn start_rules_and_spans_round_trip() {
        for text in [
            "with_parent",
            "after_parent + 2h",
            "next_workday 09:00",
            "after_parent + 1h30m",
        ] {
            let rule: StartRule = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
        assert_eq!("1d".parse::<Span>().unwrap().to_string(), "1d");
    }
}
