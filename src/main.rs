//! The `muster` command line.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use muster::auth::{add_account, check_password_strength, hash_password, new_token, token_hash};
use muster::config::Config;
use muster::directory::{DirectoryError, ImportKind, import, load_demo};
use muster::domain::access::StaffRole;
use muster::domain::demo::{DEMO_LOGINS, DEMO_PASSWORD};
use muster::domain::import::ImportError;
use muster::startup::{Application, open_store};
use muster::telemetry::init_logging;

#[derive(Parser)]
#[command(
    name = "muster",
    version,
    about = "Tiered video dispatch meetings (视频调度会)"
)]
struct Cli {
    /// Configuration file (default: ./muster.toml if it exists).
    #[arg(long, global = true, env = "MUSTER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Load the demo dataset (Hebei) into an empty database and print the demo logins.
        #[arg(long)]
        demo: bool,
        /// Number of generated enterprises in the demo dataset.
        #[arg(long, default_value_t = 2000, requires = "demo")]
        enterprises: usize,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Import units or people from a CSV file (UTF-8, UTF-8 with BOM, or GBK). All rows or none.
    Import {
        kind: ImportTarget,
        file: PathBuf,
        /// Name recorded in the audit log.
        #[arg(long, default_value = "cli")]
        actor: String,
    },
    /// Staff accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// The job queue: see failures, retry or cancel jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Agenda templates.
    Agendas {
        #[command(subcommand)]
        command: AgendasCommand,
    },
    /// Dispatches: plan (dry run), publish, show, reschedule, cancel.
    Dispatch {
        /// Act as this staff account (its scope applies); by default the CLI acts on everything.
        #[arg(long = "as", global = true)]
        as_user: Option<String>,
        #[command(subcommand)]
        command: DispatchCommand,
    },
    /// Benchmarks: figures printed beside a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Plan and publish the industry-and-trade cascade of the demo province, beside a bare
    /// batched insert of the same rows (SQLite in a temporary folder; PostgreSQL if given).
    Cascade {
        /// Generated enterprises in the demo directory.
        #[arg(long, default_value_t = 50000)]
        enterprises: usize,
        /// PostgreSQL server to create (and drop) a throwaway database on.
        #[arg(long, env = "MUSTER_BENCH_POSTGRES_URL", hide_env_values = true)]
        postgres: Option<String>,
        /// Timed runs of each measurement.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Post signed LiveKit participant events for a 20,000-invitee meeting to muster over
    /// loopback, beside an endpoint that only verifies and parses them (SQLite in a temporary
    /// folder; PostgreSQL if given). Fails if any event is unaccounted for.
    Webhooks {
        /// Participant connections (each a joined and a left event).
        #[arg(long, default_value_t = 50000)]
        connections: usize,
        /// Client tasks posting at the same time. LiveKit posts one room's events one at a
        /// time (a serial queue per room), so 1 is the benchmark's meeting as LiveKit
        /// delivers it; more clients stand for several rooms' events at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// PostgreSQL server to create (and drop) a throwaway database on.
        #[arg(long, env = "MUSTER_BENCH_POSTGRES_URL", hide_env_values = true)]
        postgres: Option<String>,
    },
    /// Roll up 200,000 follow-ups at province scale (by region, by tier, and drilled into a
    /// city), beside a plain count over the same rows (SQLite in a temporary folder;
    /// PostgreSQL if given). Fails if the roll-up's figures are wrong.
    Rollup {
        /// Follow-ups to create.
        #[arg(long, default_value_t = 200000)]
        followups: usize,
        /// Generated enterprises in the demo directory.
        #[arg(long, default_value_t = 50000)]
        enterprises: usize,
        /// PostgreSQL server to create (and drop) a throwaway database on.
        #[arg(long, env = "MUSTER_BENCH_POSTGRES_URL", hide_env_values = true)]
        postgres: Option<String>,
        /// Timed runs of each measurement.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs, most recently changed first.
    List {
        /// queued, running, done, dead, cancelled or all.
        #[arg(long, default_value = "all")]
        status: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue a dead or cancelled job again.
    Retry { id: i64 },
    /// Cancel a queued job.
    Cancel { id: i64 },
}

#[derive(Subcommand)]
enum AgendasCommand {
    /// Validate every template in DIR (default: the configured folder).
    Check { dir: Option<PathBuf> },
}

#[derive(clap::Args)]
struct DispatchArgs {
    /// Template id, e.g. industry-trade-resumption.
    #[arg(long)]
    template: String,
    /// Code (or id) of the unit that hosts the first meeting.
    #[arg(long)]
    root: String,
    /// Start: `2026-12-05 09:00` (the template's time zone) or RFC 3339.
    #[arg(long)]
    start: String,
    /// Units chosen for templates that invite chosen units (codes or ids).
    #[arg(long = "choose")]
    chosen: Vec<String>,
}

#[derive(Subcommand)]
enum DispatchCommand {
    /// Show the plan without storing anything.
    Plan(DispatchArgs),
    /// Plan and publish: meetings, invitations and their jobs in one transaction.
    Publish(DispatchArgs),
    /// Show a dispatch and its meetings.
    Show { id: i64 },
    /// Move a dispatch to a new start; dependent meetings follow.
    Reschedule {
        id: i64,
        #[arg(long)]
        start: String,
    },
    /// Cancel a dispatch and all its meetings.
    Cancel {
        id: i64,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ImportTarget {
    Units,
    People,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create an account. The password is read from standard input (one line) when it is not a
    /// terminal; otherwise a random one is generated and printed.
    Add {
        username: String,
        #[arg(long, value_parser = parse_role)]
        role: StaffRole,
        /// Code of the unit whose subtree the account works on.
        #[arg(long)]
        unit: String,
        /// Name shown in pages (default: the username).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List accounts.
    List,
    /// Disable an account: it can no longer sign in, its sessions and API tokens end.
    Disable { username: String },
    /// Enable a disabled account again.
    Enable { username: String },
    /// Issue an API token for an account and print it (shown once).
    Token {
        username: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

async fn dispatch_command(
    config: &Config,
    as_user: Option<String>,
    command: DispatchCommand,
) -> anyhow::Result<ExitCode> {
    use muster::dispatch as d;
    let store = open_store(config).await?;
    let principal = match as_user {
        Some(name) => cli_principal_for(&store, &name).await?,
        None => muster::domain::access::Principal {
            account_id: 0,
            username: "cli".into(),
            role: StaffRole::Admin,
            unit_id: 0,
            unit_name: "(all units)".into(),
            unit_path: "/".into(),
        },
    };
    let is_default = config.agendas_dir == Config::default().agendas_dir;
    let templates = muster::agendas::load(&config.agendas_dir, is_default)?;
    let now = chrono::Utc::now();
    let input = |a: DispatchArgs| d::DispatchInput {
        template: a.template,
        root_unit: a.root,
        start: a.start,
        chosen_units: a.chosen,
    };
    let result = match command {
        DispatchCommand::Plan(args) => {
            let input = input(args);
            match d::prepare(&store, &templates, &principal, &input, now).await {
                Ok(prepared) => d::build_plan(&store, &prepared)
                    .await
                    .map(|(plan, dir)| print_preview(&d::preview(&plan, &dir))),
                Err(e) => Err(e),
            }
        }
        DispatchCommand::Publish(args) => d::publish(
            &store,
            &templates,
            &config.livekit,
            &principal,
            &input(args),
            now,
        )
        .await
        .map(|(id, preview)| {
            print_preview(&preview);
            println!("published as dispatch {id}");
        }),
        DispatchCommand::Show { id } => d::view(&store, &principal, id).await.map(|view| {
            let tz: chrono_tz::Tz = view
                .dispatch
                .timezone
                .parse()
                .unwrap_or(chrono_tz::Asia::Shanghai);
            println!(
                "dispatch {} · {} · {} · {}",
                view.dispatch.id,
                view.dispatch.title,
                view.dispatch.root_unit_name,
                view.dispatch.status
            );
            for node in &view.meetings {
                let m = &node.meeting;
                let depth = depth_of(&view.meetings, m.parent_id);
                println!(
                    "{}{} [{}] {} {}–{}  {}: {} invited, {} confirmed, {} declined",
                    "  ".repeat(depth),
                    m.id,
                    m.tier,
                    m.title,
                    m.planned_start.with_timezone(&tz).format("%m-%d %H:%M"),
                    m.planned_end.with_timezone(&tz).format("%H:%M"),
                    m.status,
                    node.rsvp.total,
                    node.rsvp.confirmed,
                    node.rsvp.declined
                );
            }
        }),
        DispatchCommand::Reschedule { id, start } => {
            d::reschedule_dispatch(&store, &config.livekit, &principal, id, &start, now)
                .await
                .map(|n| println!("dispatch {id}: {n} meeting(s) moved"))
        }
        DispatchCommand::Cancel { id, reason } => {
            d::cancel_dispatch(&store, &principal, id, &reason)
                .await
                .map(|n| println!("dispatch {id}: {n} meeting(s) cancelled"))
        }
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn depth_of(meetings: &[muster::dispatch::MeetingNode], mut parent: Option<i64>) -> usize {
    let mut depth = 0;
    while let Some(p) = parent {
        depth += 1;
        parent = meetings
            .iter()
            .find(|n| n.meeting.id == p)
            .and_then(|n| n.meeting.parent_id);
    }
    depth
}

fn print_preview(p: &muster::dispatch::PlanPreview) {
    println!(
        "{} · {} · {} ({})",
        p.title,
        p.root_unit,
        p.starts_at.format("%Y-%m-%d %H:%M UTC"),
        p.timezone
    );
    println!(
        "{} meeting(s), {} invitation(s)",
        p.meeting_count, p.invitation_count
    );
    for m in &p.meetings {
        let mut depth = 0;
        let mut parent = m.parent;
        while let Some(i) = parent {
            depth += 1;
            parent = p.meetings[i].parent;
        }
        println!(
            "{}[{}] {} · {}{} · {} unit(s), {} invitation(s)",
            "  ".repeat(depth),
            m.tier,
            m.title,
            m.local_start,
            if m.joins_parent { " (joins live)" } else { "" },
            m.units,
            m.invitations
        );
    }
    if !p.skipped.is_empty() {
        println!("skipped:");
        for s in &p.skipped {
            println!("  [{}] {}: {}", s.tier_id, s.unit_name, s.reason);
        }
    }
    for b in &p.double_bookings {
        println!(
            "double-booked: {} in {} and {}",
            b.unit_name, p.meetings[b.first].title, p.meetings[b.second].title
        );
    }
    if p.warning_count > 0 {
        println!("{} warning(s), e.g.:", p.warning_count);
        for w in p.warnings.iter().take(10) {
            println!("  {}", serde_json::to_string(w).unwrap_or_default());
        }
    }
}

async fn cli_principal_for(
    store: &muster::store::Store,
    username: &str,
) -> anyhow::Result<muster::domain::access::Principal> {
    let account = store
        .account_by_username(&username.to_lowercase())
        .await?
        .account;
    if account.disabled {
        anyhow::bail!("account {username} is disabled");
    }
    let unit = store.unit(account.unit_id).await?;
    Ok(muster::domain::access::Principal {
        account_id: account.id,
        username: account.username,
        role: account.role,
        unit_id: unit.id,
        unit_name: unit.name,
        unit_path: unit.path,
    })
}

fn parse_role(s: &str) -> Result<StaffRole, String> {
    s.parse()
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve { demo, enterprises } => {
            let store = open_store(&config).await?;
            if demo {
                if load_demo(&store, enterprises).await? {
                    println!("Loaded the demo dataset (河北省, {enterprises} enterprises).");
                } else {
                    println!(
                        "The database already has a directory; the demo dataset was not loaded."
                    );
                }
                println!("Demo logins (password: {DEMO_PASSWORD}):");
                for login in DEMO_LOGINS {
                    println!(
                        "  {:<10} {:<9} {}",
                        login.username, login.role, login.display_name
                    );
                }
            }
            let app = Application::build(config, store).await?;
            println!("muster is serving on http://{}", app.local_addr());
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            open_store(&config).await?;
            println!("database is up to date");
        }
        Command::Import { kind, file, actor } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let store = open_store(&config).await?;
            let kind = match kind {
                ImportTarget::Units => ImportKind::Units,
                ImportTarget::People => ImportKind::People,
            };
            match import(&store, kind, &bytes, &file.display().to_string(), &actor).await {
                Ok(r) => println!(
                    "{}: {} rows ({:?}): {} inserted, {} updated, {} unchanged",
                    file.display(),
                    r.rows,
                    r.encoding,
                    r.inserted,
                    r.updated,
                    r.unchanged
                ),
                Err(DirectoryError::Import(ImportError::Rows(rows))) => {
                    eprintln!(
                        "{}: {} bad row(s); nothing was imported:",
                        file.display(),
                        rows.len()
                    );
                    for row in rows {
                        eprintln!("  line {}: {}", row.line, row.message);
                    }
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => {
                    eprintln!("{}: {e}; nothing was imported", file.display());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Users { command } => users(&config, command).await?,
        Command::Jobs { command } => {
            let store = open_store(&config).await?;
            let now = chrono::Utc::now();
            match command {
                JobsCommand::List { status, limit } => {
                    let status = (status != "all").then_some(status.as_str());
                    for j in store.jobs_by_status(status, limit).await? {
                        println!(
                            "{:>7} {:<10} {:<16} attempts {:>2}/{:<2} run at {}  {}",
                            j.id,
                            j.status,
                            j.kind,
                            j.attempts,
                            j.max_attempts,
                            j.run_at.format("%Y-%m-%d %H:%M:%S"),
                            j.last_error.unwrap_or_default()
                        );
                    }
                }
                JobsCommand::Retry { id } => {
                    let job = store.retry_job(id, now).await?;
                    println!("job {} is {} again", job.id, job.status);
                }
                JobsCommand::Cancel { id } => {
                    let job = store.cancel_job(id, now).await?;
                    println!("job {} is {}", job.id, job.status);
                }
            }
        }
        Command::Agendas {
            command: AgendasCommand::Check { dir },
        } => {
            let dir = dir.unwrap_or_else(|| config.agendas_dir.clone());
            match muster::agendas::load_dir(&dir) {
                Ok(set) => {
                    for t in &set.templates {
                        println!("ok  {:<28} {}", t.id, t.title);
                    }
                    println!(
                        "{} template(s) in {} are valid",
                        set.templates.len(),
                        dir.display()
                    );
                }
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Dispatch { as_user, command } => {
            return dispatch_command(&config, as_user, command).await;
        }
        Command::Bench {
            command:
                BenchCommand::Cascade {
                    enterprises,
                    postgres,
                    runs,
                },
        } => {
            let opts = muster::bench::CascadeOptions {
                enterprises,
                postgres,
                runs,
            };
            muster::bench::cascade(&opts).await?;
        }
        Command::Bench {
            command:
                BenchCommand::Webhooks {
                    connections,
                    concurrency,
                    postgres,
                },
        } => {
            let opts = muster::bench::WebhooksOptions {
                connections,
                concurrency,
                postgres,
            };
            muster::bench::webhooks(&opts).await?;
        }
        Command::Bench {
            command:
                BenchCommand::Rollup {
                    followups,
                    enterprises,
                    postgres,
                    runs,
                },
        } => {
            let opts = muster::rollup_bench::RollupOptions {
                followups,
                enterprises,
                postgres,
                runs,
            };
            muster::rollup_bench::rollup(&opts).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn users(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        UsersCommand::Add {
            username,
            role,
            unit,
            name,
        } => {
            let (password, generated) = if std::io::stdin().is_terminal() {
                (new_token()[..16].to_string(), true)
            } else {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            };
            check_password_strength(&password).map_err(anyhow::Error::msg)?;
            let hash = hash_password(&password)?;
            let account = add_account(&store, &username, &name, role, &unit, &hash, "cli").await?;
            println!(
                "created {} ({}, {})",
                account.username, account.role, account.unit_name
            );
            if generated {
                println!("password: {password}");
            }
        }
        UsersCommand::List => {
            for a in store.list_accounts().await? {
                println!(
                    "{:<16} {:<9} {:<12} {}{}",
                    a.username,
                    a.role,
                    a.unit_name,
                    a.display_name,
                    if a.disabled { "  (disabled)" } else { "" }
                );
            }
        }
        UsersCommand::Disable { username } => {
            store.set_account_disabled(&username, true, "cli").await?;
            println!("disabled {username}");
        }
        UsersCommand::Enable { username } => {
            store.set_account_disabled(&username, false, "cli").await?;
            println!("enabled {username}");
        }
        UsersCommand::Token { username, name } => {
            let account = store
                .account_by_username(&username.to_lowercase())
                .await?
                .account;
            let token = new_token();
            store
                .create_api_token(account.id, &name, &token_hash(&token), "cli")
                .await?;
            println!("{token}");
        }
    }
    Ok(())
}
