//! Configuration: built-in defaults, overridden by `muster.toml`, overridden by `MUSTER_…`
//! environment variables (`__` separates a section from its key, e.g.
//! `MUSTER_LIVEKIT__API_SECRET`). Unknown keys and invalid values stop start-up with a message
//! naming the key and where it came from.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A value that must never reach a log line or `Debug` output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// The address people reach muster at; used in links sent by mail.
    pub public_url: String,
    /// Time zone in which times are shown when a dispatch does not say otherwise.
    pub timezone: chrono_tz::Tz,
    /// Language of pages and messages: `zh-CN` or `en`.
    pub language: Language,
    /// Folder of agenda templates.
    pub agendas_dir: PathBuf,
    pub database: DatabaseConfig,
    pub livekit: LiveKitConfig,
    pub mail: MailConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub jobs: JobsConfig,
    pub followups: FollowupsConfig,
    pub attendance: AttendanceConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttendanceConfig {
    /// Joining more than this many minutes after the start is late.
    pub late_after_minutes: u32,
    /// Leaving for good more than this many minutes before the end is leaving early.
    pub early_before_minutes: u32,
}

impl AttendanceConfig {
    pub fn rules(&self) -> crate::domain::report::Rules {
        crate::domain::report::Rules {
            late_after: chrono::Duration::minutes(i64::from(self.late_after_minutes)),
            early_before: chrono::Duration::minutes(i64::from(self.early_before_minutes)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowupsConfig {
    /// Yellow when at most this many days are left…
    pub yellow_days: u32,
    /// …or at most this percentage of the whole time.
    pub yellow_percent: u32,
    /// A reminder goes out this long before the due date.
    pub remind_before_hours: u32,
    /// Overdue reminders and escalations go out at most once per period.
    pub overdue_period_hours: u32,
    /// How often deadlines are swept.
    pub sweep_minutes: u32,
    /// Where attachments are stored.
    pub attachments_dir: PathBuf,
    pub attachment_max_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Run job workers in this process (several instances may all run them).
    pub enabled: bool,
    pub workers: u32,
    /// How long a claimed job is a worker's before others may take it over.
    pub lease_seconds: u32,
    pub poll_milliseconds: u32,
    pub backoff_base_seconds: u32,
    pub backoff_max_seconds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Language {
    #[serde(rename = "zh-CN")]
    ZhCn,
    #[serde(rename = "en")]
    En,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` or `postgres://…`. Kept secret because PostgreSQL URLs carry passwords.
    pub url: Secret,
    pub max_connections: u32,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url_password(self.url.expose()))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:[redacted]@host/db`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:[redacted]@{host}")
        }
        _ => url.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveKitConfig {
    pub url: String,
    pub api_key: String,
    pub api_secret: Secret,
    /// Where `join` sends people: `{url}` and `{token}` are filled in (URL-encoded). The
    /// default is LiveKit Meet's custom-server page.
    pub join_url: String,
    /// Rooms are created this long before their meeting starts.
    pub room_lead_minutes: u32,
    /// Invitees may join this long before the start.
    pub join_early_minutes: u32,
    /// Rooms stay open, and join tokens valid, this long after the planned end.
    pub grace_minutes: u32,
    /// How long LiveKit keeps an empty room (it must survive until people arrive).
    pub empty_timeout_seconds: u32,
    /// Places in a room beyond its invitations (guests, interpreters, reconnects).
    pub participant_margin: u32,
    /// While a meeting is live, the ledger is compared with ListParticipants this often.
    pub reconcile_seconds: u32,
    /// Path prefix for recordings, as the egress service writes them.
    pub recordings_path: String,
    /// Per-request timeout of LiveKit API calls.
    pub request_timeout_seconds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailTransport {
    /// Write each message as an `.eml` file into `outbox_dir`.
    Outbox,
    Smtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    pub transport: MailTransport,
    pub outbox_dir: PathBuf,
    pub from: String,
    /// Folder with edited copies of message templates (`zh-CN/invitation.txt` …); the built-in
    /// ones are used for any file it lacks. Empty: built-in only.
    pub templates_dir: PathBuf,
    pub smtp: SmtpConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of a login session.
    pub session_hours: u32,
    /// Failed logins per account (and per client address) before it is locked for a while.
    pub max_failed_logins: u32,
    pub lockout_minutes: u32,
    /// Mark the session cookie `Secure` (set when served over HTTPS).
    pub secure_cookies: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            timezone: chrono_tz::Asia::Shanghai,
            language: Language::ZhCn,
            agendas_dir: "agendas".into(),
            database: DatabaseConfig {
                url: Secret::new("sqlite://muster.db"),
                max_connections: 10,
            },
            livekit: LiveKitConfig {
                url: "ws://127.0.0.1:7880".into(),
                api_key: "devkey".into(),
                api_secret: Secret::new("secret"),
                join_url: "https://meet.livekit.io/custom?liveKitUrl={url}&token={token}".into(),
                room_lead_minutes: 30,
                join_early_minutes: 30,
                grace_minutes: 30,
                empty_timeout_seconds: 3600,
                participant_margin: 20,
                reconcile_seconds: 30,
                recordings_path: "recordings".into(),
                request_timeout_seconds: 10,
            },
            mail: MailConfig {
                transport: MailTransport::Outbox,
                outbox_dir: "outbox".into(),
                from: "muster <muster@localhost>".into(),
                templates_dir: PathBuf::new(),
                smtp: SmtpConfig {
                    host: "localhost".into(),
                    port: 587,
                    tls: SmtpTls::Starttls,
                    username: String::new(),
                    password: Secret::default(),
                },
            },
            auth: AuthConfig {
                session_hours: 12,
                max_failed_logins: 5,
                lockout_minutes: 15,
                secure_cookies: false,
            },
            http: HttpConfig {
                body_limit_bytes: 2 * 1024 * 1024,
            },
            attendance: AttendanceConfig {
                late_after_minutes: 5,
                early_before_minutes: 10,
            },
            followups: FollowupsConfig {
                yellow_days: 3,
                yellow_percent: 20,
                remind_before_hours: 24,
                overdue_period_hours: 24,
                sweep_minutes: 60,
                attachments_dir: "attachments".into(),
                attachment_max_bytes: 10 * 1024 * 1024,
            },
            jobs: JobsConfig {
                enabled: true,
                workers: 2,
                lease_seconds: 60,
                poll_milliseconds: 1000,
                backoff_base_seconds: 30,
                backoff_max_seconds: 3600,
            },
        }
    }
}

/// Environment variables with the `MUSTER_` prefix that are not configuration keys (besides
/// `MUSTER_TEST_*`, the test suite's switches).
const NON_CONFIG_VARS: &[&str] = &["CONFIG", "LOG"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Where a configured value came from, for error messages.
enum Origin {
    File(PathBuf),
    Env(String),
}

impl Config {
    /// Loads the configuration. `file` is read when given (it must then exist); otherwise
    /// `muster.toml` in the working directory is read if present.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// As [`Config::load`], with the environment passed in (tests use this).
    ///
    /// Layering is done on `toml::Value`s rather than with a layering crate: the defaults'
    /// own shape tells which keys exist and what type an environment string must parse to,
    /// which gives precise messages ("unknown key", "expected an integer") naming the key
    /// and the variable or file it came from.
    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let defaults = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(format!("defaults: {e}")))?;
        let mut merged = defaults.clone();
        let mut origins: Vec<(String, Origin)> = Vec::new();

        let path = match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    message: "file not found".into(),
                });
            }
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from("muster.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = &path {
            let file_error = |message: String| ConfigError::File {
                path: path.clone(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| file_error(e.to_string().trim_end().to_string()))?;
            let mut keys = Vec::new();
            overlay(
                &mut merged,
                &defaults,
                toml::Value::Table(table),
                "",
                &mut keys,
            )
            .map_err(file_error)?;
            origins.extend(keys.into_iter().map(|k| (k, Origin::File(path.clone()))));
        }

        for (name, value) in env {
            let Some(key) = name.strip_prefix("MUSTER_") else {
                continue;
            };
            if NON_CONFIG_VARS.contains(&key) || key.starts_with("TEST_") {
                continue;
            }
            let dotted = env_key_to_dotted(&defaults, key);
            let Some(default) = lookup(&defaults, &dotted) else {
                return Err(ConfigError::Invalid(format!(
                    "unknown key `{dotted}` (from environment variable {name})"
                )));
            };
            let typed = coerce_env_value(default, value).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{dotted}: invalid value {value:?} (from environment variable {name}): \
                     expected {}",
                    default.type_str()
                ))
            })?;
            set(&mut merged, &dotted, typed);
            origins.push((dotted, Origin::Env(name.clone())));
        }

        let config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            let origin = origins
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, o)| match o {
                    Origin::File(p) => format!(" (from {})", p.display()),
                    Origin::Env(v) => format!(" (from environment variable {v})"),
                })
                .unwrap_or_default();
            ConfigError::Invalid(format!("{key}: {}{origin}", e.inner()))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(format!(
                "database.url: expected sqlite://FILE or postgres://…, got {}",
                redact_url_password(url)
            )));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "database.max_connections: must be at least 1".into(),
            ));
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "public_url: expected an http:// or https:// address, got {:?}",
                self.public_url
            )));
        }
        let lk = &self.livekit.url;
        if !["ws://", "wss://", "http://", "https://"]
            .iter()
            .any(|s| lk.starts_with(s))
        {
            return Err(ConfigError::Invalid(format!(
                "livekit.url: expected ws://, wss://, http:// or https://, got {lk:?}"
            )));
        }
        if !(self.livekit.join_url.contains("{token}")) {
            return Err(ConfigError::Invalid(format!(
                "livekit.join_url: must contain {{token}} (and usually {{url}}), got {:?}",
                self.livekit.join_url
            )));
        }
        if self.livekit.reconcile_seconds == 0 {
            return Err(ConfigError::Invalid(
                "livekit.reconcile_seconds: must be at least 1".into(),
            ));
        }
        if self.followups.overdue_period_hours == 0 || self.followups.sweep_minutes == 0 {
            return Err(ConfigError::Invalid(
                "followups.overdue_period_hours and followups.sweep_minutes: must be at least 1"
                    .into(),
            ));
        }
        if self.followups.yellow_percent > 100 {
            return Err(ConfigError::Invalid(
                "followups.yellow_percent: at most 100".into(),
            ));
        }
        if self.auth.max_failed_logins == 0 {
            return Err(ConfigError::Invalid(
                "auth.max_failed_logins: must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Copies `layer` over `target`, refusing keys that the defaults do not have.
fn overlay(
    target: &mut toml::Value,
    defaults: &toml::Value,
    layer: toml::Value,
    prefix: &str,
    keys: &mut Vec<String>,
) -> Result<(), String> {
    let toml::Value::Table(layer) = layer else {
        return Ok(());
    };
    for (key, value) in layer {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(default) = defaults.get(&key) else {
            let known: Vec<&str> = defaults
                .as_table()
                .map(|t| t.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(format!(
                "unknown key `{dotted}`; expected one of: {}",
                known.join(", ")
            ));
        };
        let slot = target
            .get_mut(&key)
            .expect("merged config has every default key");
        if default.is_table() {
            if !value.is_table() {
                return Err(format!("`{dotted}` must be a table ([{dotted}])"));
            }
            overlay(slot, default, value, &dotted, keys)?;
        } else {
            *slot = value;
            keys.push(dotted);
        }
    }
    Ok(())
}

/// `LIVEKIT__API_SECRET` → `livekit.api_secret`. The single-underscore spelling people tend to
/// write (`DATABASE_URL`) is accepted too when its first word names a section.
fn env_key_to_dotted(defaults: &toml::Value, key: &str) -> String {
    let lower = key.to_lowercase();
    if lower.contains("__") {
        return lower.replace("__", ".");
    }
    match lower.split_once('_') {
        Some((section, rest))
            if defaults.get(section).is_some_and(toml::Value::is_table)
                && lookup(defaults, &format!("{section}.{rest}")).is_some() =>
        {
            format!("{section}.{rest}")
        }
        _ => lower,
    }
}

fn lookup<'a>(value: &'a toml::Value, dotted: &str) -> Option<&'a toml::Value> {
    dotted
        .split('.')
        .try_fold(value, |v, k| v.get(k))
        .filter(|v| !v.is_table())
}

fn set(value: &mut toml::Value, dotted: &str, new: toml::Value) {
    let slot = dotted
        .split('.')
        .fold(value, |v, k| v.get_mut(k).expect("key checked by lookup"));
    *slot = new;
}

/// Environment values are strings; give them the type the default has.
fn coerce_env_value(default: &toml::Value, raw: &str) -> Option<toml::Value> {
    Some(match default {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return None,
        }),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_match_the_embedded_setup() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database.url.expose(), "sqlite://muster.db");
        assert_eq!(c.timezone, chrono_tz::Asia::Shanghai);
        assert_eq!(c.livekit.url, "ws://127.0.0.1:7880");
        assert_eq!(c.livekit.api_key, "devkey");
        assert_eq!(c.livekit.api_secret.expose(), "secret");
        assert_eq!(c.mail.transport, MailTransport::Outbox);
        assert_eq!(c.mail.outbox_dir, PathBuf::from("outbox"));
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let f = file("timezone = \"Asia/Urumqi\"\n[livekit]\nurl = \"wss://lk.example.cn\"\n");
        let c = Config::load_from(
            Some(f.path()),
            &env(&[
                ("MUSTER_LIVEKIT__URL", "wss://other.example.cn"),
                ("MUSTER_DATABASE_URL", "postgres://muster:pw@db/muster"),
                ("MUSTER_AUTH__SESSION_HOURS", "8"),
                ("MUSTER_TEST_POSTGRES_URL", "ignored"),
                ("MUSTER_TEST_REQUIRE_BROWSER", "1"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.timezone, chrono_tz::Asia::Urumqi);
        assert_eq!(c.livekit.url, "wss://other.example.cn");
        assert_eq!(c.database.url.expose(), "postgres://muster:pw@db/muster");
        assert_eq!(c.auth.session_hours, 8);
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = file("[livekit]\napi_secrett = \"x\"\n");
        let e = Config::load_from(Some(f.path()), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key `livekit.api_secrett`"), "{e}");
        assert!(e.contains("api_secret"), "lists the known keys: {e}");
        let e = Config::load_from(None, &env(&[("MUSTER_LIVEKIT__SECRET", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key `livekit.secret`") && e.contains("MUSTER_LIVEKIT__SECRET"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_are_named_with_their_source() {
        let f = file("timezone = \"Mars/Olympus\"\n");
        let e = Config::load_from(Some(f.path()), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("timezone") && e.contains("Mars/Olympus"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");

        let e = Config::load_from(None, &env(&[("MUSTER_HTTP__BODY_LIMIT_BYTES", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http.body_limit_bytes") && e.contains("MUSTER_HTTP__BODY_LIMIT_BYTES"),
            "{e}"
        );

        let e = Config::load_from(None, &env(&[("MUSTER_LISTEN", "port eighty")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("MUSTER_LISTEN"), "{e}");

        let e = Config::load_from(None, &env(&[("MUSTER_DATABASE__URL", "mysql://x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url"), "{e}");

        let f = file("listen = [\n");
        let e = Config::load_from(Some(f.path()), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1") || e.contains("line 2"),
            "syntax errors carry a line: {e}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = Config::load_from(
            None,
            &env(&[
                (
                    "MUSTER_DATABASE__URL",
                    "postgres://muster:db-password@db/muster",
                ),
                ("MUSTER_LIVEKIT__API_SECRET", "livekit-secret-value"),
                ("MUSTER_MAIL__SMTP__PASSWORD", "smtp-password-value"),
            ]),
        )
        .unwrap();
        let debug = format!("{c:?}");
        for secret in ["db-password", "livekit-secret-value", "smtp-password-value"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("postgres://muster:[redacted]@db/muster"));
    }
}
