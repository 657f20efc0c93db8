//! `muster bench rollup`: how long the closure roll-up of follow-ups (督办) takes at province
//! scale, beside a floor measured in the same run. Not a test: figures depend on the machine,
//! and a missed aim is reported, not failed (wrong roll-up figures are).
//!
//! Setup, untimed, per backend (SQLite in a temporary folder; PostgreSQL too when given, in a
//! database `muster_bench_…` created on that server; both removed at the end): the demo
//! directory (河北省 with `--enterprises` generated enterprises), then `--followups`
//! follow-ups in action items issued by the province, each item assigned through
//! `Store::create_action_item` to a contiguous run (in path order, wrapping round) of about
//! 10,000 of the province's cities, districts and enterprises, so that every unit ends up with
//! about the same number. Every other item is a cascade: the follow-up of a unit whose parent
//! unit has the same item becomes a delegated child of the parent's (`parent_id`, assigner and
//! `open_children` set as delegation sets them), with the tier of the meeting the unit's level
//! is invited to (city: `province`, district: `city`, enterprise: `district`); the others are
//! assigned directly from the province's meeting (`province`). Items fall due from three weeks
//! ago to two weeks ahead; statuses are spread over the lifecycle by bulk UPDATEs (open ones
//! past their due date are overdue). On PostgreSQL, whose bulk UPDATEs leave dead versions of
//! every row, the table is then rewritten (`VACUUM FULL`), vacuumed and analysed, as if the rows
//! had been written in their final state and autovacuum had been by; SQLite is left as it is
//! (its UPDATEs write in place, and muster never runs `ANALYZE` on it).
//!
//! Timed (`--runs` times each, in a rotating order after one untimed warm-up; median and
//! minimum):
//!
//! - `Store::rollup` at the province's scope, grouped by region and by tier;
//! - `Store::rollup` drilled down into one city (唐山, grouped by region: its districts);
//! - the **floor** of each scope: `SELECT COUNT(*)` over the same path range of the same
//!   table — what any roll-up must at least read.
//!
//! Checked: the groups' totals add up to the floor's count, and every figure equals a count
//! made in memory from the rows themselves (`Closure::count`).

use crate::bench::{PgScratch, ScratchDir, median, ms, verdict, with_scratch};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, SubsecRound, Utc};

use crate::directory::load_demo;
use crate::domain::followup::{Closure, Status};
use crate::domain::org::{Level, Unit, subtree_range};
use crate::store::{Assignee, Grouping, NewActionItem, RollupRow, Store, with_db};

/// 河北省, the root of the demo directory, which issues every action item.
const PROVINCE_CODE: &str = "130000";
/// 唐山市, the city the drill-down goes into.
const CITY_CODE: &str = "130200";
/// Follow-ups per action item, about (fewer items if the directory is small).
const PER_ITEM: usize = 10_000;
const AIM_MS: f64 = 100.0;
const ACTOR: &str = "bench";
/// Statuses by share of follow-ups in percent, in the order of the lifecycle.
const STATUS_SHARES: &[(Status, u32)] = &[
    (Status::Assigned, 12),
    (Status::Acknowledged, 12),
    (Status::InProgress, 18),
    (Status::Submitted, 10),
    (Status::Verified, 30),
    (Status::Returned, 5),
    (Status::NotDoing, 5),
    (Status::Cancelled, 8),
];

#[derive(Debug, Clone)]
pub struct RollupOptions {
    /// Follow-ups to create.
    pub followups: usize,
    /// Generated enterprises in the demo directory.
    pub enterprises: usize,
    /// A PostgreSQL server to create a throwaway database on (any database of it in the URL).
    pub postgres: Option<String>,
    /// Timed runs of each measurement.
    pub runs: usize,
}

/// Runs the roll-up benchmark and prints its table to standard output (progress goes to
/// standard error). Fails only if a roll-up's figures are wrong.
pub async fn rollup(opts: &RollupOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(opts.followups > 0, "--followups must be at least 1");
    let outcome = with_scratch(opts.postgres.as_deref(), async |scratch, pg| {
        run(opts, scratch, pg).await
    })
    .await;
    let backends = outcome?;
    print!("{}", table(opts, &backends));
    let wrong: Vec<String> = backends
        .iter()
        .flat_map(|b| b.problems.iter().map(move |p| format!("{}: {p}", b.name)))
        .collect();
    anyhow::ensure!(
        wrong.is_empty(),
        "the roll-up's figures are wrong:\n  {}",
        wrong.join("\n  ")
    );
    Ok(())
}

/// What one backend measured.
struct BackendReport {
    name: &'static str,
    data: DataSummary,
    demo_load: Duration,
    generate: Duration,
    measurements: Vec<Measured>,
    /// Wrong figures, described.
    problems: Vec<String>,
}

/// What the generated data holds.
struct DataSummary {
    province_name: String,
    city_name: String,
    units: usize,
    items: usize,
    delegated: i64,
    /// The province's figures, summed over its regions.
    closure: Closure,
}

/// The timed queries: the floor of a scope, or a roll-up of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Query {
    Floor(Scope),
    Rollup(Scope, Grouping),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Province,
    City,
}

const QUERIES: [Query; 5] = [
    Query::Floor(Scope::Province),
    Query::Rollup(Scope::Province, Grouping::Region),
    Query::Rollup(Scope::Province, Grouping::Tier),
    Query::Floor(Scope::City),
    Query::Rollup(Scope::City, Grouping::Region),
];

struct Measured {
    query: Query,
    samples: Vec<Duration>,
    /// Rows counted (floor) or groups returned (roll-up).
    rows: i64,
}

async fn run(
    opts: &RollupOptions,
    scratch: &ScratchDir,
    pg: Option<&PgScratch>,
) -> anyhow::Result<Vec<BackendReport>> {
    let mut targets = vec![("sqlite", scratch.url())];
    if let Some(pg) = pg {
        targets.push(("postgres", pg.url.clone()));
    }
    // Whole seconds, so that the in-memory count's days overdue cannot round differently.
    let now = Utc::now().trunc_subsecs(0);
    let mut out = Vec::new();
    for (name, url) in targets {
        let store = Store::connect(&url, 10)
            .await
            .with_context(|| format!("opening the {name} database"))?;
        store.migrate().await?;
        let report = on_backend(opts, name, &store, now).await;
        store.close().await;
        out.push(report?);
    }
    Ok(out)
}

async fn on_backend(
    opts: &RollupOptions,
    name: &'static str,
    store: &Store,
    now: DateTime<Utc>,
) -> anyhow::Result<BackendReport> {
    eprintln!(
        "{name}: loading the demo directory ({} enterprises)…",
        opts.enterprises
    );
    let t = Instant::now();
    anyhow::ensure!(
        load_demo(store, opts.enterprises).await?,
        "the fresh {name} database already has a directory"
    );
    let demo_load = t.elapsed();

    eprintln!("{name}: creating {} follow-ups…", opts.followups);
    let t = Instant::now();
    let generated = generate(store, opts.followups, now).await?;
    let generate = t.elapsed();
    let province = &generated.province;
    let city = store.unit_by_code(CITY_CODE).await?;
    let scope_path = |s: Scope| match s {
        Scope::Province => province.path.as_str(),
        Scope::City => city.path.as_str(),
    };

    // Checked once, untimed (and warming the caches): the figures against the rows.
    let mut problems = Vec::new();
    let rows = followup_rows(store).await?;
    let mut province_closure = Closure::default();
    for q in QUERIES {
        let Query::Rollup(scope, grouping) = q else {
            continue;
        };
        let path = scope_path(scope);
        let got = store.rollup(path, grouping, None, None, None, now).await?;
        let expected = count_in_memory(&rows, path, grouping, now);
        let got_map: BTreeMap<&str, &Closure> =
            got.iter().map(|r| (r.key.as_str(), &r.closure)).collect();
        let expected_map: BTreeMap<&str, &Closure> =
            expected.iter().map(|(k, c)| (k.as_str(), c)).collect();
        if got_map != expected_map {
            let differing: Vec<String> = expected_map
                .keys()
                .chain(got_map.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| got_map.get(*k) != expected_map.get(*k))
                .take(3)
                .map(|k| {
                    format!(
                        "{k:?}: {:?}, counted {:?}",
                        got_map.get(k),
                        expected_map.get(k)
                    )
                })
                .collect();
            problems.push(format!(
                "{} differs from an in-memory count of the rows, e.g. {}",
                label(q),
                differing.join("; ")
            ));
        }
        if (scope, grouping) == (Scope::Province, Grouping::Region) {
            for r in &got {
                province_closure.add(&r.closure);
            }
        }
    }
    drop(rows);
    // One untimed warm-up of each query.
    for q in QUERIES {
        match q {
            Query::Floor(scope) => {
                floor_count(store, scope_path(scope)).await?;
            }
            Query::Rollup(scope, grouping) => {
                store
                    .rollup(scope_path(scope), grouping, None, None, None, now)
                    .await?;
            }
        }
    }

    eprintln!("{name}: timing, {} runs each…", opts.runs);
    let mut measurements: Vec<Measured> = QUERIES
        .iter()
        .map(|&query| Measured {
            query,
            samples: Vec::new(),
            rows: 0,
        })
        .collect();
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for run in 0..opts.runs {
        // Rotate the order, so that no query always follows the same one. Each run starts at
        // a floor or has counted both scopes before, so `counts` is there for the check.
        for k in 0..QUERIES.len() {
            let m = &mut measurements[(run + k) % QUERIES.len()];
            match m.query {
                Query::Floor(scope) => {
                    let path = scope_path(scope);
                    let t = Instant::now();
                    let n = floor_count(store, path).await?;
                    m.samples.push(t.elapsed());
                    m.rows = n;
                    counts.insert(path, n);
                }
                Query::Rollup(scope, grouping) => {
                    let t = Instant::now();
                    let groups = store
                        .rollup(scope_path(scope), grouping, None, None, None, now)
                        .await?;
                    m.samples.push(t.elapsed());
                    m.rows = groups.len() as i64;
                    check_totals(m.query, &groups, scope_path(scope), &counts, &mut problems);
                }
            }
        }
    }
    if counts.get(province.path.as_str()) != Some(&(opts.followups as i64)) {
        problems.push(format!(
            "the province's floor counted {:?} follow-ups of {} created",
            counts.get(province.path.as_str()),
            opts.followups
        ));
    }
    problems.sort_unstable();
    problems.dedup();

    Ok(BackendReport {
        name,
        data: DataSummary {
            province_name: province.name.clone(),
            city_name: city.name.clone(),
            units: generated.units,
            items: generated.items,
            delegated: generated.delegated,
            closure: province_closure,
        },
        demo_load,
        generate,
        measurements,
        problems,
    })
}

/// The sum of the groups' totals must be the floor's count of the same range.
fn check_totals(
    query: Query,
    groups: &[RollupRow],
    path: &str,
    counts: &BTreeMap<&str, i64>,
    problems: &mut Vec<String>,
) {
    let Some(&count) = counts.get(path) else {
        return;
    };
    let total: i64 = groups.iter().map(|g| g.closure.total).sum();
    if total != count {
        problems.push(format!(
            "{}: the groups' totals add up to {total}, the floor counts {count}",
            label(query)
        ));
    }
}

/// The floor: a plain count over the scope's path range, as the roll-up filters it.
async fn floor_count(store: &Store, scope_path: &str) -> anyhow::Result<i64> {
    let (start, end) = subtree_range(scope_path);
    Ok(with_db!(&store.db, |pool| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM followups WHERE assignee_path >= $1 AND assignee_path < $2",
        )
        .bind(&start)
        .bind(&end)
        .fetch_one(pool)
        .await?
    }))
}

struct Generated {
    province: Unit,
    /// Units below the province (the assignees).
    units: usize,
    items: usize,
    delegated: i64,
}

/// The tier of the meeting a unit of `level` is invited to in a full cascade.
fn cascade_tier(level: Level) -> &'static str {
    match level {
        Level::Province | Level::City => "province",
        Level::District => "city",
        Level::Enterprise => "district",
    }
}

/// How many follow-ups each of `items` action items gets: `total` as evenly as possible.
fn item_sizes(total: usize, items: usize) -> Vec<usize> {
    (0..items)
        .map(|k| total / items + usize::from(k < total % items))
        .collect()
}

/// Creates the action items and follow-ups (see the module's documentation).
async fn generate(
    store: &Store,
    followups: usize,
    now: DateTime<Utc>,
) -> anyhow::Result<Generated> {
    let (units, _) = store.directory_snapshot().await?;
    let province = units
        .iter()
        .find(|u| u.code == PROVINCE_CODE)
        .context("the demo directory has no province")?
        .clone();
    // In path order, so that a run of them holds whole subtrees (a cascade's parents and
    // children together).
    let mut below: Vec<&Unit> = units
        .iter()
        .filter(|u| u.path.starts_with(&province.path) && u.id != province.id)
        .collect();
    below.sort_by(|a, b| a.path.cmp(&b.path));
    let n = below.len();
    anyhow::ensure!(n > 0, "the province has no units below it");
    // A unit gets an item at most once.
    let items = followups.div_ceil(PER_ITEM).max(followups.div_ceil(n));
    let sizes = item_sizes(followups, items);

    let mut offset = 0;
    let mut cascades = Vec::new();
    for (k, &size) in sizes.iter().enumerate() {
        let cascade = k % 2 == 0;
        // Due from 21 days ago to 14 days ahead, issued 21 days before.
        let due_at = now - chrono::Duration::days(21)
            + chrono::Duration::hours((k * 35 * 24 / items) as i64);
        let issued = due_at - chrono::Duration::days(21);
        let assignees = (0..size)
            .map(|j| {
                let u = below[(offset + j) % n];
                Assignee {
                    unit_id: u.id,
                    path: u.path.clone(),
                    level: u.level.as_str().into(),
                    tier: if cascade {
                        cascade_tier(u.level)
                    } else {
                        "province"
                    }
                    .into(),
                }
            })
            .collect();
        offset = (offset + size) % n;
        let item = NewActionItem {
            dispatch_id: None,
            meeting_id: None,
            issuer_unit_id: province.id,
            title: format!("基准督办事项 {}", k + 1),
            description: if cascade {
                "逐级分解落实".into()
            } else {
                "直接交办".into()
            },
            due_at,
            delegable: true,
            assignees,
        };
        let (id, _) = store.create_action_item(&item, ACTOR, issued).await?;
        if cascade {
            cascades.push(id);
        }
    }
    let delegated = shape_followups(store, &cascades, now).await?;
    Ok(Generated {
        province,
        units: n,
        items,
        delegated,
    })
}

/// Delegation in the cascaded items, then statuses spread over the lifecycle, in bulk.
/// Returns how many follow-ups are delegated children.
async fn shape_followups(
    store: &Store,
    cascades: &[i64],
    now: DateTime<Utc>,
) -> anyhow::Result<i64> {
    let final_list = "('verified', 'not_doing', 'cancelled')";
    let cascades = if cascades.is_empty() {
        "NULL".to_string()
    } else {
        cascades
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cases = String::from("CASE");
    let mut upto = 0;
    for (status, share) in STATUS_SHARES {
        upto += share;
        cases.push_str(&format!(" WHEN (id * 7919) % 100 < {upto} THEN '{status}'"));
    }
    cases.push_str(" END");
    debug_assert_eq!(upto, 100);
    let statements = [
        // A follow-up whose unit's parent has the same item was delegated by that parent.
        format!(
            "UPDATE followups SET parent_id = (SELECT p.id FROM followups p JOIN units u \
             ON u.parent_id = p.assignee_unit_id WHERE u.id = followups.assignee_unit_id \
             AND p.action_item_id = followups.action_item_id) WHERE action_item_id IN ({cascades})"
        ),
        "UPDATE followups SET assigner_unit_id = (SELECT p.assignee_unit_id FROM followups p \
         WHERE p.id = followups.parent_id) WHERE parent_id IS NOT NULL"
            .to_string(),
        format!("UPDATE followups SET status = {cases}"),
        // Delegating moves a follow-up on to in progress.
        "UPDATE followups SET status = 'in_progress' WHERE status IN ('assigned', 'acknowledged') \
         AND id IN (SELECT parent_id FROM followups WHERE parent_id IS NOT NULL)"
            .to_string(),
        format!(
            "UPDATE followups SET closed_at = CASE WHEN status IN {final_list} \
             THEN CASE WHEN id % 2 = 0 THEN assigned_at ELSE $1 END END, updated_at = $1"
        ),
        format!(
            "UPDATE followups SET open_children = (SELECT COUNT(*) FROM followups c \
             WHERE c.parent_id = followups.id AND c.status NOT IN {final_list}) \
             WHERE id IN (SELECT parent_id FROM followups WHERE parent_id IS NOT NULL)"
        ),
    ];
    for sql in &statements {
        with_db!(&store.db, |pool| {
            let q = sqlx::query(sql);
            let q = if sql.contains("$1") { q.bind(now) } else { q };
            q.execute(pool).await?;
        });
    }
    Ok(with_db!(&store.db, |pool| {
        if matches!(store.backend(), crate::store::Backend::Postgres) {
            // The bulk UPDATEs above left dead versions of every row: rewrite the table as if
            // the rows had been written in their final state, then vacuum it as autovacuum
            // would have by now (the visibility map, for index-only scans) and analyse.
            for sql in [
                "VACUUM (FULL) followups",
                "VACUUM (ANALYZE) followups",
                "ANALYZE",
            ] {
                sqlx::query(sql).execute(pool).await?;
            }
        }
        sqlx::query_scalar("SELECT COUNT(*) FROM followups WHERE parent_id IS NOT NULL")
            .fetch_one(pool)
            .await?
    }))
}

/// What the roll-up reads of every follow-up: path, tier, status, due.
type FollowupRow = (String, String, String, DateTime<Utc>);

async fn followup_rows(store: &Store) -> anyhow::Result<Vec<FollowupRow>> {
    Ok(with_db!(&store.db, |pool| {
        sqlx::query_as("SELECT assignee_path, tier, status, due_at FROM followups")
            .fetch_all(pool)
            .await?
    }))
}

/// The roll-up's figures counted in memory with `Closure::count`.
fn count_in_memory(
    rows: &[FollowupRow],
    scope_path: &str,
    grouping: Grouping,
    now: DateTime<Utc>,
) -> BTreeMap<String, Closure> {
    let mut out: BTreeMap<String, Closure> = BTreeMap::new();
    for (path, tier, status, due) in rows {
        let Some(rest) = path.strip_prefix(scope_path) else {
            continue;
        };
        let key = match grouping {
            Grouping::Tier => tier.as_str(),
            Grouping::Region => rest.split('/').next().unwrap_or(""),
        };
        let status: Status = status.parse().unwrap_or(Status::Assigned);
        out.entry(key.to_string())
            .or_default()
            .count(status, *due, now);
    }
    out
}

fn label(q: Query) -> &'static str {
    match q {
        Query::Floor(Scope::Province) => "province: floor (count)",
        Query::Rollup(Scope::Province, Grouping::Region) => "province: roll-up by region",
        Query::Rollup(Scope::Province, Grouping::Tier) => "province: roll-up by tier",
        Query::Floor(Scope::City) => "city: floor (count)",
        Query::Rollup(Scope::City, Grouping::Region) => "city: roll-up by region",
        Query::Rollup(Scope::City, Grouping::Tier) => "city: roll-up by tier",
    }
}

fn table(opts: &RollupOptions, backends: &[BackendReport]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let Some(first) = backends.first() else {
        return out;
    };
    let d = &first.data;
    let _ = writeln!(
        out,
        "rollup benchmark: {} follow-ups in {} action items of {} over {} units below it \
         ({} enterprises); drill-down into {}; times are medians of {} run(s)",
        opts.followups, d.items, d.province_name, d.units, opts.enterprises, d.city_name, opts.runs
    );
    for b in backends {
        let c = &b.data.closure;
        let _ = writeln!(
            out,
            "{:<9}data: {} delegated, {} closed, {} cancelled, {} open of which {} overdue; \
             demo load {:.1} s, follow-ups {:.1} s",
            b.name,
            b.data.delegated,
            c.closed,
            c.cancelled,
            c.total - c.closed - c.cancelled,
            c.overdue,
            b.demo_load.as_secs_f64(),
            b.generate.as_secs_f64()
        );
        let floor_of = |scope: Scope| {
            b.measurements
                .iter()
                .find(|m| m.query == Query::Floor(scope))
                .map_or(0.0, |m| ms(median(&m.samples)))
        };
        for m in &b.measurements {
            let med = ms(median(&m.samples));
            let min = ms(m.samples.iter().min().copied().unwrap_or_default());
            let (rows, tail) = match m.query {
                Query::Floor(_) => (format!("{} rows", m.rows), String::new()),
                Query::Rollup(scope, _) => {
                    let floor = floor_of(scope);
                    (
                        format!("{} groups", m.rows),
                        format!(
                            "   {:.1}x the floor   aim < {AIM_MS:.0} ms   {}",
                            med / floor,
                            verdict(med < AIM_MS)
                        ),
                    )
                }
            };
            let line = format!(
                "{:<9}{:<30}{med:>8.1} ms   min {min:>7.1} ms   {rows:<12}{tail}",
                b.name,
                label(m.query)
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(
            out,
            "{:<9}figures: {}",
            b.name,
            if b.problems.is_empty() {
                "totals add up to the floor's count and match an in-memory count of the rows"
            } else {
                "WRONG (see below)"
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_share_the_follow_ups_evenly() {
        assert_eq!(item_sizes(200_000, 20), vec![10_000; 20]);
        let sizes = item_sizes(25_003, 3);
        assert_eq!(sizes, vec![8_335, 8_334, 8_334]);
        assert_eq!(sizes.iter().sum::<usize>(), 25_003);
    }

    #[test]
    fn statuses_cover_every_follow_up() {
        assert_eq!(STATUS_SHARES.iter().map(|(_, s)| s).sum::<u32>(), 100);
    }

    #[test]
    fn in_memory_count_groups_by_region_and_tier() {
        let now = Utc::now();
        let past = now - chrono::Duration::days(2);
        let row = |path: &str, tier: &str, status: &str| {
            (path.to_string(), tier.to_string(), status.to_string(), past)
        };
        let rows = vec![
            row("/130000/130200/", "province", "assigned"),
            row("/130000/130200/130201/", "city", "verified"),
            row("/130000/130300/", "province", "cancelled"),
            row("/140000/", "province", "assigned"),
        ];
        let by_region = count_in_memory(&rows, "/130000/", Grouping::Region, now);
        assert_eq!(by_region.len(), 2);
        assert_eq!(by_region["130200"].total, 2);
        assert_eq!(by_region["130200"].overdue, 1);
        assert_eq!(by_region["130200"].overdue_days, 2);
        assert_eq!(by_region["130300"].cancelled, 1);
        let by_tier = count_in_memory(&rows, "/130000/", Grouping::Tier, now);
        assert_eq!(by_tier["province"].total, 2);
        assert_eq!(by_tier["city"].closed, 1);
        let own = count_in_memory(&rows, "/130000/130200/", Grouping::Region, now);
        assert_eq!(own[""].total, 1);
        assert_eq!(own["130201"].total, 1);
    }
}
