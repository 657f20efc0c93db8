//! Notifications: e-mail over SMTP or into an outbox folder, message templates, calendar
//! parts, personal links, and the jobs that send them.

pub mod calendar;
pub mod handlers;
pub mod links;
pub mod templates;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailConfig, MailTransport, SmtpTls};

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a folder: the embedded default, so nothing needs a mail server.
    Outbox(AsyncFileTransport<Tokio1Executor>),
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// The server refused for good (5xx): retrying cannot help.
    pub permanent: bool,
}

impl Mailer {
    pub fn from_config(config: &MailConfig) -> anyhow::Result<Self> {
        Ok(match config.transport {
            MailTransport::Outbox => {
                std::fs::create_dir_all(&config.outbox_dir).map_err(|e| {
                    anyhow::anyhow!("mail.outbox_dir {}: {e}", config.outbox_dir.display())
                })?;
                Mailer::Outbox(AsyncFileTransport::new(&config.outbox_dir))
            }
            MailTransport::Smtp => {
                let smtp = &config.smtp;
                let builder = match smtp.tls {
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                    SmtpTls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                            .map_err(|e| anyhow::anyhow!("mail.smtp.host {}: {e}", smtp.host))?
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                        .map_err(|e| anyhow::anyhow!("mail.smtp.host {}: {e}", smtp.host))?,
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(std::time::Duration::from_secs(30)));
                if !smtp.username.is_empty() {
                    builder = builder.credentials(Credentials::new(
                        smtp.username.clone(),
                        smtp.password.expose().to_string(),
                    ));
                }
                Mailer::Smtp(builder.build())
            }
        })
    }

    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Mailer::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|e| SendError {
                permanent: e.is_permanent(),
                message: e.to_string(),
            }),
            Mailer::Outbox(outbox) => {
                outbox
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| SendError {
                        permanent: false,
                        message: e.to_string(),
                    })
            }
        }
    }
}
