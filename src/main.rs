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
