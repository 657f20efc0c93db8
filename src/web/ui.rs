//! Page rendering: minijinja templates built into the binary (`templates/web`), a message
//! catalogue in both languages (`templates/web/messages.toml`), and the filters pages use.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::response::Html;
use minijinja::value::Value;
use minijinja::{Environment, State};

use crate::config::Language;
use crate::error::AppError;

macro_rules! pages {
    ($($name:literal),+ $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/web/", $name)))),+]
    };
}

/// Every page template, by name.
pub const TEMPLATES: &[(&str, &str)] = pages![
    "base.html",
    "forms.html",
    "login.html",
    "home.html",
    "error.html",
    "dispatches.html",
    "dispatch_new.html",
    "dispatch.html",
    "meeting.html",
    "roll_call.html",
    "confirmations.html",
    "followups.html",
    "followup.html",
    "closure.html",
    "invitee.html",
    "invitee_followups.html",
    "notice.html",
];

const MESSAGES: &str = include_str!("../../templates/web/messages.toml");

/// key → (zh-CN, en). One file with both languages side by side, so none drifts.
pub static CATALOGUE: LazyLock<HashMap<String, (String, String)>> = LazyLock::new(|| {
    let table: HashMap<String, Vec<String>> =
        toml::from_str(MESSAGES).expect("templates/web/messages.toml is valid (tested)");
    table
        .into_iter()
        .map(|(k, mut v)| {
            let en = v.pop().unwrap_or_default();
            let zh = v.pop().unwrap_or_default();
            (k, (zh, en))
        })
        .collect()
});

pub fn lang_code(lang: Language) -> &'static str {
    crate::notify::templates::language_code(lang)
}

/// The message `key` in `lang`; an unknown key shows itself (and a test finds it).
pub fn translate(lang: Language, key: &str) -> String {
    match CATALOGUE.get(key) {
        Some((zh, en)) => match lang {
            Language::ZhCn => zh.clone(),
            Language::En => en.clone(),
        },
        None => key.to_string(),
    }
}

fn lang_of(state: &State) -> Language {
    match state.lookup("lang").as_ref().and_then(|v| v.as_str()) {
        Some("en") => Language::En,
        _ => Language::ZhCn,
    }
}

/// `{{ t("key") }}`, or `{{ t("key", n=3) }}` with `{n}` in the message.
fn t(
    state: &State,
    key: &str,
    kwargs: minijinja::value::Kwargs,
) -> Result<String, minijinja::Error> {
    let mut text = translate(lang_of(state), key);
    for arg in kwargs.args() {
        let value: Value = kwargs.get(arg)?;
        text = text.replace(&format!("{{{arg}}}"), &value.to_string());
    }
    Ok(text)
}

/// `{{ at | local }}` or `{{ at | local(tz) }}`: an RFC 3339 time as `2026-12-05 09:00` in the
/// time zone (Asia/Shanghai unless given).
fn local(value: Value, tz: Option<&str>) -> String {
    let Some(text) = value.as_str() else {
        return String::new();
    };
    let tz: chrono_tz::Tz = tz
        .and_then(|t| t.parse().ok())
        .unwrap_or(chrono_tz::Asia::Shanghai);
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(at) => at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string(),
        Err(_) => text.to_string(),
    }
}

/// `{{ rate | percent }}`: a share in percent (0–100) with one decimal, or a dash.
fn percent(value: Value) -> String {
    match f64::try_from(value) {
        Ok(v) if v.is_finite() => format!("{v:.1}%"),
        _ => "—".into(),
    }
}

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("templates/web/{name}: {e}"));
    }
    env.add_function("t", t);
    env.add_filter("local", local);
    env.add_filter("percent", percent);
    env
});

/// Renders a page; `ctx` carries `lang` (see `Staff::context`).
pub fn render(name: &str, ctx: Value) -> Result<Html<String>, AppError> {
    ENV.get_template(name)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("page {name}: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            ENV.get_template(name).unwrap();
        }
    }

    #[test]
    fn every_message_has_both_languages() {
        let table: HashMap<String, Vec<String>> = toml::from_str(MESSAGES).unwrap();
        for (key, texts) in &table {
            assert_eq!(texts.len(), 2, "{key}: give [zh-CN, en]");
            assert!(texts.iter().all(|t| !t.trim().is_empty()), "{key}: empty");
        }
    }

    /// Every `t("…")` in the templates (and in the page code) names a message.
    #[test]
    fn every_key_used_exists() {
        let mut sources: Vec<(&str, String)> = TEMPLATES
            .iter()
            .map(|(n, s)| (*n, (*s).to_string()))
            .collect();
        for (name, source) in [
            ("web/mod.rs", include_str!("mod.rs")),
            ("web/staff.rs", include_str!("staff.rs")),
            ("web/invitee.rs", include_str!("invitee.rs")),
        ] {
            sources.push((name, source.to_string()));
        }
        let mut missing = Vec::new();
        for (name, source) in &sources {
            for quote in ['"', '\''] {
                let opener = format!("t({quote}");
                let mut rest = source.as_str();
                while let Some(at) = rest.find(&opener) {
                    let preceded_by_word = rest[..at]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
                    rest = &rest[at + opener.len()..];
                    let Some(end) = rest.find(quote) else { break };
                    let key = &rest[..end];
                    if !preceded_by_word && !key.ends_with('.') && !CATALOGUE.contains_key(key) {
                        missing.push(format!("{name}: {key}"));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "messages missing: {missing:#?}");
    }

    /// Keys the pages build from values (`"status." ~ f.status`) or name in code.
    #[test]
    fn every_value_has_a_message() {
        use crate::domain::access::StaffRole;
        use crate::domain::followup::{Action, Status};
        use crate::domain::org::Sector;
        let mut keys: Vec<String> = Vec::new();
        keys.extend(
            StaffRole::ALL
                .iter()
                .map(|r| format!("role.{}", r.as_str())),
        );
        keys.extend(Sector::ALL.iter().map(|s| format!("sector.{}", s.as_str())));
        for s in ["scheduled", "live", "finished", "cancelled"] {
            keys.push(format!("meeting_status.{s}"));
        }
        for s in ["pending", "confirmed", "declined", "delegated"] {
            keys.push(format!("rsvp.{s}"));
            keys.push(format!("invitee.rsvp.{s}"));
        }
        for r in ["host", "speaker", "attendee", "observer"] {
            keys.push(format!("invitation_role.{r}"));
        }
        for w in ["no_person_in_roles", "no_email"] {
            keys.push(format!("warning.{w}"));
        }
        for status in Status::ALL {
            keys.push(format!("status.{}", status.as_str()));
        }
        for a in Action::ALL {
            keys.push(format!("action.{}", a.as_str()));
            keys.push(format!("done.{}", a.as_str()));
        }
        keys.push("action.delegate".into());
        for kind in ["dispatch", "meeting"] {
            for k in ["change", "cancel", "cancel_confirm"] {
                keys.push(format!("{kind}.{k}"));
            }
        }
        for d in [
            "published",
            "reminded",
            "ended",
            "action_item",
            "confirmed",
            "delegated",
            "attached",
        ] {
            keys.push(format!("done.{d}"));
        }
        for e in ["forbidden", "not_found", "conflict", "invalid", "internal"] {
            keys.push(format!("error.{e}"));
        }
        for k in [
            "login.failed",
            "login.locked",
            "invitee.bad_link",
            "invitee.bad_link_text",
            "invitee.cannot_change",
            "invitee.cannot_change_text",
            "invitee.join",
            "invitee.join_cancelled",
            "invitee.join_declined",
            "invitee.join_over",
            "invitee.join_not_yet",
            "invitee.no_roll_call",
        ] {
            keys.push(k.into());
        }
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !CATALOGUE.contains_key(*k))
            .collect();
        assert!(missing.is_empty(), "messages missing: {missing:?}");
    }

    #[test]
    fn local_times_are_shown_in_the_zone() {
        assert_eq!(
            local(Value::from("2026-12-05T01:00:00Z"), None),
            "2026-12-05 09:00"
        );
        assert_eq!(
            local(Value::from("2026-12-05T01:00:00Z"), Some("UTC")),
            "2026-12-05 01:00"
        );
        assert_eq!(percent(Value::from(87.26)), "87.3%");
        assert_eq!(percent(Value::from(())), "—");
    }
}
