//! Message templates: one file per message and language, `templates/mail/{lang}/{name}.txt`.
//! The first line is the subject, a blank line follows, the rest is the body; both are
//! minijinja templates. The shipped files are built in; a deployer edits copies in the folder
//! named by `mail.templates_dir`, which take precedence.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

use crate::config::Language;

pub const MESSAGES: &[&str] = &[
    "invitation",
    "update",
    "cancellation",
    "reminder",
    "followup_assigned",
    "followup_reminder",
    "followup_overdue",
    "followup_escalation",
    "followup_returned",
    "confirm_reminder",
];

macro_rules! built_in {
    ($($lang:literal / $name:literal),+ $(,)?) => {
        &[$(($lang, $name, include_str!(concat!("../../templates/mail/", $lang, "/", $name, ".txt")))),+]
    };
}

const BUILT_IN: &[(&str, &str, &str)] = built_in![
    "zh-CN" / "invitation",
    "zh-CN" / "update",
    "zh-CN" / "cancellation",
    "zh-CN" / "reminder",
    "zh-CN" / "followup_assigned",
    "zh-CN" / "followup_reminder",
    "zh-CN" / "followup_overdue",
    "zh-CN" / "followup_escalation",
    "zh-CN" / "followup_returned",
    "zh-CN" / "confirm_reminder",
    "en" / "invitation",
    "en" / "update",
    "en" / "cancellation",
    "en" / "reminder",
    "en" / "followup_assigned",
    "en" / "followup_reminder",
    "en" / "followup_overdue",
    "en" / "followup_escalation",
    "en" / "followup_returned",
    "en" / "confirm_reminder",
];

pub fn language_code(language: Language) -> &'static str {
    match language {
        Language::ZhCn => "zh-CN",
        Language::En => "en",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("message template {file}: {message}")]
    Invalid { file: String, message: String },
    #[error("cannot read message template {file}: {message}")]
    Read { file: String, message: String },
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

pub struct MessageTemplates {
    env: Environment<'static>,
}

impl MessageTemplates {
    /// The built-in templates, overridden by any `{lang}/{name}.txt` found in `dir`. Every
    /// template is compiled now, so a broken one stops start-up rather than a send.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_keep_trailing_newline(true);
        for (lang, name, text) in BUILT_IN {
            let file = format!("{lang}/{name}.txt");
            let text = match dir.map(|d| d.join(&file)).filter(|p| p.exists()) {
                Some(path) => std::fs::read_to_string(&path).map_err(|e| TemplateError::Read {
                    file: path.display().to_string(),
                    message: e.to_string(),
                })?,
                None => text.to_string(),
            };
            let (subject, body) = text
                .split_once('\n')
                .ok_or_else(|| TemplateError::Invalid {
                    file: file.clone(),
                    message: "expected the subject on the first line, then the body".into(),
                })?;
            let body = body.strip_prefix('\n').unwrap_or(body).to_string();
            for (part, source) in [("subject", subject.trim().to_string()), ("body", body)] {
                env.add_template_owned(format!("{file}#{part}"), source)
                    .map_err(|e| TemplateError::Invalid {
                        file: file.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
        Ok(Self { env })
    }

    pub fn render(
        &self,
        language: Language,
        name: &str,
        context: &impl Serialize,
    ) -> Result<Rendered, TemplateError> {
        let file = format!("{}/{name}.txt", language_code(language));
        let render = |part: &str| -> Result<String, TemplateError> {
            self.env
                .get_template(&format!("{file}#{part}"))
                .and_then(|t| t.render(context))
                .map_err(|e| TemplateError::Invalid {
                    file: file.clone(),
                    message: e.to_string(),
                })
        };
        Ok(Rendered {
            subject: render("subject")?.trim().to_string(),
            body: render("body")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meeting_context() -> serde_json::Value {
        json!({
            "recipient": {"name": "张伟"},
            "meeting": {"title": "全省煤矿视频调度会", "start_local": "2026-12-07 09:00", "end_local": "10:30",
                         "timezone": "Asia/Shanghai", "host": "河北省", "joins_parent": false, "parent_title": null,
                         "agenda": [{"title": "通报情况", "minutes": 20, "presenter": "煤矿处"}]},
            "role": "参会", "link": "https://muster.example/i/abc", "sender": "河北省应急管理厅",
            "reason": "疫情形势变化", "lead": "15分钟",
            "followup": {"title": "报送验收结果", "due_local": "2026-12-14", "status": "办理中", "days_overdue": 2,
                          "assigner": "河北省", "assignee": "唐山市", "description": null},
        })
    }

    #[test]
    fn every_message_renders_in_both_languages() {
        let templates = MessageTemplates::load(None).unwrap();
        for lang in [Language::ZhCn, Language::En] {
            for name in MESSAGES {
                let r = templates.render(lang, name, &meeting_context()).unwrap();
                assert!(!r.subject.is_empty() && !r.subject.contains('\n'), "{name}");
                assert!(
                    r.body.contains("张伟"),
                    "{name} ({lang:?}) greets the recipient"
                );
            }
        }
        let r = templates
            .render(Language::ZhCn, "invitation", &meeting_context())
            .unwrap();
        assert_eq!(
            r.subject,
            "【会议通知】全省煤矿视频调度会（2026-12-07 09:00）"
        );
        assert!(
            r.body.contains("1. 通报情况（20 分钟，煤矿处）"),
            "{}",
            r.body
        );
        assert!(r.body.contains("https://muster.example/i/abc"));
    }

    #[test]
    fn a_deployers_copy_overrides_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("zh-CN")).unwrap();
        std::fs::write(
            dir.path().join("zh-CN/reminder.txt"),
            "提醒：{{ meeting.title }}\n\n请准时参会。\n",
        )
        .unwrap();
        let templates = MessageTemplates::load(Some(dir.path())).unwrap();
        let r = templates
            .render(Language::ZhCn, "reminder", &meeting_context())
            .unwrap();
        assert_eq!(
            (r.subject.as_str(), r.body.as_str()),
            ("提醒：全省煤矿视频调度会", "请准时参会。\n")
        );

        std::fs::write(
            dir.path().join("zh-CN/reminder.txt"),
            "提醒：{{ meeting.title \n\nx\n",
        )
        .unwrap();
        let err = MessageTemplates::load(Some(dir.path()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("zh-CN/reminder.txt"), "{err}");
    }
}
