//! The cascade builder: from an agenda template, the org directory, a root unit and a start
//! time to the plan of every meeting and invitation of a dispatch. Pure: no I/O, no clock.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use serde::Serialize;

use super::agenda::{AgendaTemplate, InviteGroup, MeetingRole, SectorFilter, StartRule, Tier};
use super::org::{Level, Person, PersonRole, Sector, Unit, join_list};

/// The org directory in memory, indexed for walking subtrees.
pub struct Directory {
    units: Vec<Unit>,
    by_id: HashMap<i64, usize>,
    children: Vec<Vec<usize>>,
    people: HashMap<i64, Vec<Person>>,
}

impl Directory {
    pub fn new(units: Vec<Unit>, people: Vec<Person>) -> Self {
        let by_id: HashMap<i64, usize> = units.iter().enumerate().map(|(i, u)| (u.id, i)).collect();
        let mut children = vec![Vec::new(); units.len()];
        for (i, unit) in units.iter().enumerate() {
            if let Some(parent) = unit.parent_id.and_then(|p| by_id.get(&p)) {
                children[*parent].push(i);
            }
        }
        let mut by_unit: HashMap<i64, Vec<Person>> = HashMap::new();
        for person in people {
            by_unit.entry(person.unit_id).or_default().push(person);
        }
        Self {
            units,
            by_id,
            children,
            people: by_unit,
        }
    }

    pub fn unit(&self, id: i64) -> Option<&Unit> {
        self.by_id.get(&id).map(|i| &self.units[*i])
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Every unit strictly below `index`, depth first.
    fn descendants(&self, index: usize, out: &mut Vec<usize>) {
        let mut stack: Vec<usize> = self.children[index].iter().rev().copied().collect();
        while let Some(i) = stack.pop() {
            out.push(i);
            stack.extend(self.children[i].iter().rev().copied());
        }
    }

    fn people_with(&self, unit_id: i64, roles: &[PersonRole]) -> impl Iterator<Item = &Person> {
        self.people
            .get(&unit_id)
            .into_iter()
            .flatten()
            .filter(move |p| p.roles.iter().any(|r| roles.contains(r)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedInvitation {
    pub unit_id: i64,
    pub person_id: Option<i64>,
    pub role: MeetingRole,
    pub can_publish: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMeeting {
    pub tier: usize,
    pub tier_id: String,
    /// Index of the parent meeting in [`Plan::meetings`].
    pub parent: Option<usize>,
    pub host_unit_id: i64,
    pub title: String,
    /// A sub-venue: its people join the parent meeting's room.
    pub joins_parent: bool,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub record: bool,
    pub invitations: Vec<PlannedInvitation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedUnit {
    pub tier_id: String,
    pub unit_id: i64,
    pub unit_name: String,
    pub reason: String,
}

/// A unit expected in two meetings, in different rooms, at overlapping times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoubleBooking {
    pub unit_id: i64,
    pub unit_name: String,
    pub first: usize,
    pub second: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlanWarning {
    /// Nobody in the unit has the roles asked for: it is invited through its mailbox.
    NoPersonInRoles {
        unit_id: i64,
        unit_name: String,
        roles: String,
    },
    /// An invitee without an e-mail address cannot be sent the invitation.
    NoEmail {
        unit_id: i64,
        unit_name: String,
        person: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub template_id: String,
    pub title: String,
    pub sector: Option<Sector>,
    pub timezone: chrono_tz::Tz,
    pub root_unit_id: i64,
    pub meetings: Vec<PlannedMeeting>,
    pub skipped: Vec<SkippedUnit>,
    pub double_bookings: Vec<DoubleBooking>,
    pub warnings: Vec<PlanWarning>,
}

impl Plan {
    pub fn invitation_count(&self) -> usize {
        self.meetings.iter().map(|m| m.invitations.len()).sum()
    }

    /// The meeting whose room a meeting's people join: itself, or for a sub-venue the
    /// nearest ancestor that is not one.
    pub fn room_owner(&self, mut index: usize) -> usize {
        while self.meetings[index].joins_parent {
            index = self.meetings[index]
                .parent
                .expect("a sub-venue has a parent");
        }
        index
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unit {0} is not in the directory")]
    UnknownUnit(i64),
    #[error(
        "template {template} starts with a meeting hosted by a {expected} unit; {unit} is a {actual}"
    )]
    RootLevel {
        template: String,
        unit: String,
        expected: String,
        actual: Level,
    },
    #[error("{0}")]
    Chosen(String),
}

/// When a meeting of `tier` starts and ends, given its parent meeting's times (`None` for the
/// first tier, which starts at `start`).
pub fn schedule(
    tier: &Tier,
    timezone: chrono_tz::Tz,
    parent: Option<(DateTime<Utc>, DateTime<Utc>)>,
    start: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let starts = match (tier.start, parent) {
        (_, None) | (None, _) => start,
        (Some(StartRule::WithParent), Some((s, e))) => return (s, e),
        (Some(StartRule::AfterParent(gap)), Some((_, e))) => e + gap.0,
        (Some(StartRule::NextWorkday(time)), Some((s, _))) => {
            let day = next_workday(s.with_timezone(&timezone).date_naive());
            let local = day.and_time(time);
            timezone
                .from_local_datetime(&local)
                .earliest()
                .map_or(s + Duration::days(1), |t| t.with_timezone(&Utc))
        }
    };
    (starts, starts + tier.duration.0)
}

/// The first Monday–Friday after `day`. (Public holidays and the make-up working weekends
/// of the Chinese calendar are not modelled.)
pub fn next_workday(day: NaiveDate) -> NaiveDate {
    let mut next = day.succ_opt().expect("date in range");
    while matches!(next.weekday(), Weekday::Sat | Weekday::Sun) {
        next = next.succ_opt().expect("date in range");
    }
    next
}

pub struct PlanRequest<'a> {
    pub template: &'a AgendaTemplate,
    pub root_unit_id: i64,
    pub start: DateTime<Utc>,
    /// Units chosen for `chosen` invite groups.
    pub chosen: &'a [i64],
}

fn sector_matches(filter: SectorFilter, template: Option<Sector>, unit: &Unit) -> bool {
    match filter {
        SectorFilter::Any => true,
        SectorFilter::Template => template.is_none_or(|s| unit.sectors.contains(&s)),
        SectorFilter::Only(s) => unit.sectors.contains(&s),
    }
}

struct Builder<'a> {
    dir: &'a Directory,
    template: &'a AgendaTemplate,
    chosen: HashSet<i64>,
    /// Units with an enterprise of the template's sector in their subtree (or that are one).
    has_sector_enterprise: Vec<bool>,
    plan: Plan,
    scratch: Vec<usize>,
}

/// Builds the plan of a dispatch.
pub fn plan(request: &PlanRequest, dir: &Directory) -> Result<Plan, PlanError> {
    let template = request.template;
    let root_index = *dir
        .by_id
        .get(&request.root_unit_id)
        .ok_or(PlanError::UnknownUnit(request.root_unit_id))?;
    let root = &dir.units[root_index];
    let first = &template.tiers[0];
    if !first.host_levels.contains(&root.level) {
        return Err(PlanError::RootLevel {
            template: template.id.clone(),
            unit: root.name.clone(),
            expected: join_list(&first.host_levels).replace(',', " or "),
            actual: root.level,
        });
    }
    let chosen = check_chosen(request, dir, root_index)?;

    let mut has_sector_enterprise = vec![false; dir.units.len()];
    if let Some(sector) = template.sector {
        for (i, unit) in dir.units.iter().enumerate() {
            if unit.level == Level::Enterprise && unit.sectors.contains(&sector) {
                let mut at = Some(i);
                while let Some(j) = at {
                    if has_sector_enterprise[j] {
                        break;
                    }
                    has_sector_enterprise[j] = true;
                    at = dir.units[j]
                        .parent_id
                        .and_then(|p| dir.by_id.get(&p).copied());
                }
            }
        }
    }

    let mut builder = Builder {
        dir,
        template,
        chosen,
        has_sector_enterprise,
        plan: Plan {
            template_id: template.id.clone(),
            title: template.title.clone(),
            sector: template.sector,
            timezone: template.timezone,
            root_unit_id: root.id,
            meetings: Vec::new(),
            skipped: Vec::new(),
            double_bookings: Vec::new(),
            warnings: Vec::new(),
        },
        scratch: Vec::new(),
    };
    // Tiers come parents first (validation guarantees it), so one pass per tier over the
    // meetings of its parent tier builds the tree level by level.
    let (s, e) = schedule(first, template.timezone, None, request.start);
    builder.add_meeting(0, None, root_index, s, e);
    for (t, tier) in template.tiers.iter().enumerate().skip(1) {
        let parent_tier = tier.parent.expect("later tiers have a parent");
        let parents: Vec<usize> = (0..builder.plan.meetings.len())
            .filter(|m| builder.plan.meetings[*m].tier == parent_tier)
            .collect();
        for parent in parents {
            let host = builder.plan.meetings[parent].host_unit_id;
            let host_index = dir.by_id[&host];
            let times = (
                builder.plan.meetings[parent].starts_at,
                builder.plan.meetings[parent].ends_at,
            );
            let (s, e) = schedule(tier, template.timezone, Some(times), request.start);
            if dir.units[host_index].level == tier.host {
                builder.add_meeting(t, Some(parent), host_index, s, e);
            } else {
                let mut below = std::mem::take(&mut builder.scratch);
                below.clear();
                dir.descendants(host_index, &mut below);
                for &u in below.iter().filter(|&&u| dir.units[u].level == tier.host) {
                    builder.add_meeting(t, Some(parent), u, s, e);
                }
                builder.scratch = below;
            }
        }
    }
    builder.find_double_bookings();
    Ok(builder.plan)
}

fn check_chosen(
    request: &PlanRequest,
    dir: &Directory,
    root_index: usize,
) -> Result<HashSet<i64>, PlanError> {
    let groups: Vec<&InviteGroup> = request
        .template
        .tiers
        .iter()
        .flat_map(|t| t.invite.iter())
        .filter(|g| g.chosen)
        .collect();
    if groups.is_empty() {
        if !request.chosen.is_empty() {
            return Err(PlanError::Chosen(format!(
                "template {} invites no chosen units; leave the choice empty",
                request.template.id
            )));
        }
        return Ok(HashSet::new());
    }
    if request.chosen.is_empty() {
        return Err(PlanError::Chosen(format!(
            "template {} invites chosen {} units: choose at least one",
            request.template.id, groups[0].level
        )));
    }
    let root_path = &dir.units[root_index].path;
    for id in request.chosen {
        let unit = dir.unit(*id).ok_or(PlanError::UnknownUnit(*id))?;
        if !unit.path.starts_with(root_path.as_str()) || unit.path == *root_path {
            return Err(PlanError::Chosen(format!(
                "{} is not under {}",
                unit.name, dir.units[root_index].name
            )));
        }
        if !groups.iter().any(|g| {
            g.level == unit.level && sector_matches(g.sector, request.template.sector, unit)
        }) {
            return Err(PlanError::Chosen(format!(
                "{} ({}) is not a unit this template may choose",
                unit.name, unit.level
            )));
        }
    }
    let unique: HashSet<i64> = request.chosen.iter().copied().collect();
    if let Some(max) = groups.iter().filter_map(|g| g.max).max()
        && unique.len() > max
    {
        return Err(PlanError::Chosen(format!(
            "{} units chosen; template {} allows at most {max}",
            unique.len(),
            request.template.id
        )));
    }
    Ok(unique)
}

impl Builder<'_> {
    fn skip(&mut self, tier: &Tier, unit: &Unit, reason: String) {
        self.plan.skipped.push(SkippedUnit {
            tier_id: tier.id.clone(),
            unit_id: unit.id,
            unit_name: unit.name.clone(),
            reason,
        });
    }

    fn add_meeting(
        &mut self,
        t: usize,
        parent: Option<usize>,
        host_index: usize,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) {
        let dir = self.dir;
        let template = self.template;
        let tier = &template.tiers[t];
        let host = &dir.units[host_index];
        if tier.require_enterprises && !self.has_sector_enterprise[host_index] {
            let sector = template.sector.map_or("", |s| s.as_str());
            self.skip(
                tier,
                host,
                format!("no {sector} enterprise under {}", host.name),
            );
            return;
        }
        let mut below = std::mem::take(&mut self.scratch);
        below.clear();
        dir.descendants(host_index, &mut below);
        let mut invitations: Vec<PlannedInvitation> = Vec::new();
        let mut invited: HashSet<(i64, Option<i64>)> = HashSet::new();
        for group in &tier.invite {
            for &u in &below {
                let unit = &dir.units[u];
                if unit.level != group.level
                    || (unit.level == Level::Enterprise
                        && !sector_matches(group.sector, template.sector, unit))
                    || (group.chosen && !self.chosen.contains(&unit.id))
                {
                    continue;
                }
                self.invite_unit(
                    unit,
                    &group.roles,
                    group.role,
                    group.publish,
                    &mut invitations,
                    &mut invited,
                );
            }
        }
        self.scratch = below;
        if invitations.is_empty() {
            let levels: Vec<&str> = tier.invite.iter().map(|g| g.level.as_str()).collect();
            self.skip(
                tier,
                host,
                format!(
                    "nobody to invite: no {} unit under {}",
                    levels.join(" or "),
                    host.name
                ),
            );
            return;
        }
        let mut hosts = Vec::new();
        self.invite_unit(
            host,
            &tier.host_roles,
            MeetingRole::Host,
            true,
            &mut hosts,
            &mut invited,
        );
        hosts.append(&mut invitations);
        let title = match (parent, &tier.title) {
            (None, _) => template.title.clone(),
            (Some(_), Some(title)) => format!("{}{title}", host.name),
            (Some(_), None) => format!("{}·{}", host.name, template.title),
        };
        self.plan.meetings.push(PlannedMeeting {
            tier: t,
            tier_id: tier.id.clone(),
            parent,
            host_unit_id: host.id,
            title,
            joins_parent: tier.joins_parent(),
            starts_at,
            ends_at,
            record: tier.record,
            invitations: hosts,
        });
    }

    fn invite_unit(
        &mut self,
        unit: &Unit,
        roles: &[PersonRole],
        role: MeetingRole,
        publish: bool,
        out: &mut Vec<PlannedInvitation>,
        invited: &mut HashSet<(i64, Option<i64>)>,
    ) {
        let before = out.len();
        for person in self.dir.people_with(unit.id, roles) {
            if !invited.insert((unit.id, Some(person.id))) {
                continue;
            }
            if person.email.is_none() {
                self.plan.warnings.push(PlanWarning::NoEmail {
                    unit_id: unit.id,
                    unit_name: unit.name.clone(),
                    person: Some(person.name.clone()),
                });
            }
            out.push(PlannedInvitation {
                unit_id: unit.id,
                person_id: Some(person.id),
                role,
                can_publish: publish,
            });
        }
        let has_person = self.dir.people_with(unit.id, roles).next().is_some();
        if out.len() == before && !has_person && invited.insert((unit.id, None)) {
            self.plan.warnings.push(PlanWarning::NoPersonInRoles {
                unit_id: unit.id,
                unit_name: unit.name.clone(),
                roles: join_list(roles),
            });
            if unit.mailbox.is_none() {
                self.plan.warnings.push(PlanWarning::NoEmail {
                    unit_id: unit.id,
                    unit_name: unit.name.clone(),
                    person: None,
                });
            }
            out.push(PlannedInvitation {
                unit_id: unit.id,
                person_id: None,
                role,
                can_publish: publish,
            });
        }
    }

    /// Units expected (as host or invitee) in meetings of different rooms whose times overlap.
    fn find_double_bookings(&mut self) {
        let plan = &self.plan;
        let mut expected: HashMap<i64, Vec<(usize, usize)>> = HashMap::new();
        for (m, meeting) in plan.meetings.iter().enumerate() {
            let room = plan.room_owner(m);
            let mut units: Vec<i64> = meeting.invitations.iter().map(|i| i.unit_id).collect();
            units.push(meeting.host_unit_id);
            units.sort_unstable();
            units.dedup();
            for unit in units {
                let entries = expected.entry(unit).or_default();
                if !entries.iter().any(|(_, r)| *r == room) {
                    entries.push((m, room));
                }
            }
        }
        let mut found = Vec::new();
        for (unit, entries) in &expected {
            for (i, (a, _)) in entries.iter().enumerate() {
                for (b, _) in &entries[i + 1..] {
                    let (ma, mb) = (&plan.meetings[*a], &plan.meetings[*b]);
                    if ma.starts_at < mb.ends_at && mb.starts_at < ma.ends_at {
                        found.push(DoubleBooking {
                            unit_id: *unit,
                            unit_name: self
                                .dir
                                .unit(*unit)
                                .map_or(String::new(), |u| u.name.clone()),
                            first: *a.min(b),
                            second: *a.max(b),
                        });
                    }
                }
            }
        }
        found.sort_by_key(|d| (d.first, d.second, d.unit_id));
        self.plan.double_bookings = found;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::agenda::parse_template;
    use crate::domain::org::child_path;

    fn shipped(id: &str) -> AgendaTemplate {
        let path = format!("{}/agendas/{id}.toml", env!("CARGO_MANIFEST_DIR"));
        parse_template(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// 省 P; 市 A (区 A1: coal + trade enterprises; 区 A2: a trade enterprise),
    /// 市 B (区 B1, no enterprises), 市 C (no districts; a coal mine directly under it).
    fn directory() -> Directory {
        // (id, name, level, parent, sectors)
        type Spec<'a> = (i64, &'a str, Level, Option<i64>, &'a [Sector]);
        let spec: &[Spec] = &[
            (1, "P", Level::Province, None, &[]),
            (2, "A", Level::City, Some(1), &[]),
            (3, "A1", Level::District, Some(2), &[]),
            (4, "A2", Level::District, Some(2), &[]),
            (5, "B", Level::City, Some(1), &[]),
            (6, "B1", Level::District, Some(5), &[]),
            (7, "C", Level::City, Some(1), &[]),
            (
                10,
                "A1煤矿",
                Level::Enterprise,
                Some(3),
                &[Sector::CoalMine],
            ),
            (
                11,
                "A1钢厂",
                Level::Enterprise,
                Some(3),
                &[Sector::IndustryTrade],
            ),
            (
                12,
                "A2纺织",
                Level::Enterprise,
                Some(4),
                &[Sector::IndustryTrade],
            ),
            (13, "C煤矿", Level::Enterprise, Some(7), &[Sector::CoalMine]),
        ];
        let mut paths: HashMap<i64, String> = HashMap::new();
        let mut units = Vec::new();
        for (id, name, level, parent, sectors) in spec {
            let path = child_path(parent.map(|p| paths[&p].as_str()), name);
            paths.insert(*id, path.clone());
            units.push(Unit {
                id: *id,
                code: name.to_string(),
                name: name.to_string(),
                level: *level,
                parent_id: *parent,
                path,
                sectors: sectors.to_vec(),
                mailbox: None,
            });
        }
        let mut people = Vec::new();
        let mut next = 100;
        for unit in &units {
            let roles: &[PersonRole] = match unit.level {
                Level::Enterprise if unit.id == 13 => &[PersonRole::Principal],
                Level::Enterprise => &[PersonRole::Principal, PersonRole::SafetyHead],
                _ => &[
                    PersonRole::Principal,
                    PersonRole::Deputy,
                    PersonRole::Supervisor,
                ],
            };
            for role in roles {
                next += 1;
                people.push(Person {
                    id: next,
                    unit_id: unit.id,
                    name: format!("{}-{role}", unit.name),
                    roles: vec![*role],
                    email: (unit.id != 13).then(|| format!("p{next}@example.cn")),
                    mobile: None,
                });
            }
        }
        Directory::new(units, people)
    }

    /// Friday 2026-12-04 09:00 in Shanghai.
    fn friday_nine() -> DateTime<Utc> {
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2026, 12, 4, 9, 0, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn request(template: &AgendaTemplate, root: i64) -> PlanRequest<'_> {
        PlanRequest {
            template,
            root_unit_id: root,
            start: friday_nine(),
            chosen: &[],
        }
    }

    fn invited_units(m: &PlannedMeeting) -> Vec<i64> {
        let mut units: Vec<i64> = m
            .invitations
            .iter()
            .filter(|i| i.role != MeetingRole::Host)
            .map(|i| i.unit_id)
            .collect();
        units.dedup();
        units
    }

    #[test]
    fn coal_cascade_has_both_patterns_and_only_coal_enterprises() {
        let dir = directory();
        let template = shipped("coal-mine-resumption");
        let plan = plan(&request(&template, 1), &dir).unwrap();
        let shape: Vec<(&str, i64, Option<usize>, bool)> = plan
            .meetings
            .iter()
            .map(|m| (m.tier_id.as_str(), m.host_unit_id, m.parent, m.joins_parent))
            .collect();
        assert_eq!(
            shape,
            [
                ("province", 1, None, false),
                ("city-venue", 2, Some(0), true),
                ("city", 2, Some(0), false),
                ("city", 7, Some(0), false),
                ("district", 3, Some(2), false),
            ]
        );
        // The provincial call: every city, and the coal mines (never the steel works).
        assert_eq!(invited_units(&plan.meetings[0]), [2, 5, 7, 10, 13]);
        // A's sub-venue brings its districts into the provincial room, at the call's time.
        assert_eq!(invited_units(&plan.meetings[1]), [3, 4]);
        assert_eq!(plan.room_owner(1), 0);
        assert_eq!(plan.meetings[1].starts_at, plan.meetings[0].starts_at);
        // A's own follow-on meeting: its districts and its coal mine.
        assert_eq!(invited_units(&plan.meetings[2]), [3, 4, 10]);
        assert_eq!(invited_units(&plan.meetings[3]), [13]);
        assert_eq!(invited_units(&plan.meetings[4]), [10]);

        let skipped: Vec<(&str, &str, &str)> = plan
            .skipped
            .iter()
            .map(|s| (s.tier_id.as_str(), s.unit_name.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                ("city-venue", "B", "no coal_mine enterprise under B"),
                (
                    "city-venue",
                    "C",
                    "nobody to invite: no district unit under C"
                ),
                ("city", "B", "no coal_mine enterprise under B"),
                ("district", "A2", "no coal_mine enterprise under A2"),
            ]
        );
        assert!(
            plan.double_bookings.is_empty(),
            "{:?}",
            plan.double_bookings
        );
    }

    #[test]
    fn relative_starts_follow_the_parent() {
        let dir = directory();
        let template = shipped("coal-mine-resumption");
        let plan = plan(&request(&template, 1), &dir).unwrap();
        let local = |t: DateTime<Utc>| {
            t.with_timezone(&chrono_tz::Asia::Shanghai)
                .format("%a %Y-%m-%d %H:%M")
                .to_string()
        };
        assert_eq!(local(plan.meetings[0].starts_at), "Fri 2026-12-04 09:00");
        assert_eq!(local(plan.meetings[0].ends_at), "Fri 2026-12-04 10:30");
        assert_eq!(
            local(plan.meetings[1].ends_at),
            "Fri 2026-12-04 10:30",
            "sub-venue lasts as long as the call"
        );
        assert_eq!(
            local(plan.meetings[2].starts_at),
            "Fri 2026-12-04 12:30",
            "after_parent + 2h"
        );
        assert_eq!(local(plan.meetings[2].ends_at), "Fri 2026-12-04 13:30");
        assert_eq!(
            local(plan.meetings[4].starts_at),
            "Mon 2026-12-07 09:00",
            "next working day skips the weekend"
        );
    }

    #[test]
    fn roles_grants_and_warnings() {
        let dir = directory();
        let template = shipped("coal-mine-resumption");
        let plan = plan(&request(&template, 1), &dir).unwrap();
        let call = &plan.meetings[0];
        let hosts: Vec<&PlannedInvitation> = call
            .invitations
            .iter()
            .filter(|i| i.role == MeetingRole::Host)
            .collect();
        assert_eq!(hosts.len(), 2, "principal and deputy of the province host");
        assert!(hosts.iter().all(|h| h.unit_id == 1 && h.can_publish));
        let cities: Vec<&PlannedInvitation> =
            call.invitations.iter().filter(|i| i.unit_id == 2).collect();
        assert_eq!(cities.len(), 2, "deputy and supervisor of A");
        assert!(
            cities
                .iter()
                .all(|c| c.role == MeetingRole::Speaker && c.can_publish)
        );
        let mines: Vec<&PlannedInvitation> = call
            .invitations
            .iter()
            .filter(|i| i.unit_id == 10)
            .collect();
        assert_eq!(mines.len(), 2, "principal and safety head of the mine");
        assert!(
            mines
                .iter()
                .all(|m| m.role == MeetingRole::Attendee && !m.can_publish)
        );
        // C's mine has only a principal, without e-mail: one invitation, and warnings.
        let c_mine: Vec<&PlannedInvitation> = call
            .invitations
            .iter()
            .filter(|i| i.unit_id == 13)
            .collect();
        assert_eq!(c_mine.len(), 1);
        assert!(plan.warnings.contains(&PlanWarning::NoEmail {
            unit_id: 13,
            unit_name: "C煤矿".into(),
            person: Some("C煤矿-principal".into())
        }));
        // The district meeting asks the mine for its safety head too, which C's mine lacks;
        // no district meeting covers C (it has no districts), so no such warning arises.
        assert!(
            !plan
                .warnings
                .iter()
                .any(|w| matches!(w, PlanWarning::NoPersonInRoles { unit_id: 13, .. }))
        );
    }

    #[test]
    fn a_unit_without_people_in_the_roles_is_invited_through_its_mailbox() {
        let dir = directory();
        let text = std::fs::read_to_string(format!(
            "{}/agendas/industry-trade-resumption.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .replace(
            "{ level = \"enterprise\", roles = [\"principal\"] }",
            "{ level = \"enterprise\", roles = [\"liaison\"] }",
        );
        let template = parse_template("t.toml", &text).unwrap();
        let plan = plan(&request(&template, 1), &dir).unwrap();
        let city_a = plan
            .meetings
            .iter()
            .find(|m| m.tier_id == "city" && m.host_unit_id == 2)
            .unwrap();
        let steel = city_a.invitations.iter().find(|i| i.unit_id == 11).unwrap();
        assert_eq!(steel.person_id, None);
        assert!(plan.warnings.iter().any(|w| matches!(w, PlanWarning::NoPersonInRoles { unit_id: 11, roles, .. } if roles == "liaison")));
    }

    #[test]
    fn overlapping_meetings_in_different_rooms_are_double_bookings() {
        let text = r#"id = "overlap"
title = "测试"
sector = "coal_mine"
[[tiers]]
host = "province"
duration = "60m"
invite = [{ level = "city", roles = ["deputy"] }]
[[tiers]]
id = "first"
host = "city"
start = "after_parent"
duration = "60m"
invite = [{ level = "enterprise", roles = ["principal"] }]
[[tiers]]
id = "second"
parent = "province"
host = "city"
start = "after_parent + 30m"
duration = "60m"
invite = [{ level = "district", roles = ["deputy"] }]
"#;
        let template = parse_template("t.toml", text).unwrap();
        let dir = directory();
        let plan = plan(&request(&template, 1), &dir).unwrap();
        let booked: Vec<(&str, &str, &str)> = plan
            .double_bookings
            .iter()
            .map(|d| {
                (
                    d.unit_name.as_str(),
                    plan.meetings[d.first].tier_id.as_str(),
                    plan.meetings[d.second].tier_id.as_str(),
                )
            })
            .collect();
        // A hosts both its "first" (10:00–11:00) and "second" (10:30–11:30) meetings.
        assert!(booked.contains(&("A", "first", "second")), "{booked:?}");
        // The province call (09:00–10:00) does not overlap either.
        assert!(!booked.iter().any(|(_, a, _)| *a == "province"));
    }

    #[test]
    fn chosen_units_for_an_inspection() {
        let dir = directory();
        let template = shipped("remote-safety-inspection");
        let chosen = [12];
        let req = PlanRequest {
            chosen: &chosen,
            ..request(&template, 4)
        };
        let plan = plan(&req, &dir).unwrap();
        assert_eq!(plan.meetings.len(), 1);
        assert!(plan.meetings[0].record);
        assert_eq!(invited_units(&plan.meetings[0]), [12]);

        let none = PlanRequest {
            chosen: &[],
            ..request(&template, 4)
        };
        assert!(
            matches!(super::plan(&none, &dir), Err(PlanError::Chosen(m)) if m.contains("choose at least one"))
        );
        let elsewhere = [10];
        let wrong = PlanRequest {
            chosen: &elsewhere,
            ..request(&template, 4)
        };
        assert!(
            matches!(super::plan(&wrong, &dir), Err(PlanError::Chosen(m)) if m.contains("not under A2"))
        );
        let two = [10, 11];
        let too_many = PlanRequest {
            chosen: &two,
            ..request(&template, 3)
        };
        assert!(
            matches!(super::plan(&too_many, &dir), Err(PlanError::Chosen(m)) if m.contains("at most 1"))
        );
        let province = PlanRequest {
            chosen: &chosen,
            ..request(&template, 1)
        };
        assert!(matches!(
            super::plan(&province, &dir),
            Err(PlanError::RootLevel { .. })
        ));
    }

    #[test]
    fn next_workday_skips_weekends() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(next_workday(d(2026, 12, 3)), d(2026, 12, 4));
        assert_eq!(next_workday(d(2026, 12, 4)), d(2026, 12, 7));
        assert_eq!(next_workday(d(2026, 12, 5)), d(2026, 12, 7));
    }
}
