//! LiveKit: rooms through `livekit-api`'s RoomClient/EgressClient, personal join tokens,
//! webhook verification, and the jobs that create, record, reconcile and close rooms.

pub mod jobs;
pub mod writer;

use chrono::{DateTime, Utc};
use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
use livekit_api::services::ServiceError;
use livekit_api::services::egress::EgressClient;
use livekit_api::services::room::RoomClient;
use livekit_api::webhooks::{WebhookError, WebhookReceiver};
use livekit_protocol::WebhookEvent;

use crate::config::LiveKitConfig;
use crate::store::InvitationContext;

pub struct LiveKit {
    pub config: LiveKitConfig,
    pub rooms: RoomClient,
    pub egress: EgressClient,
    receiver: WebhookReceiver,
}

/// Whether a LiveKit failure is worth retrying, and what to tell people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKitFailure {
    pub message: String,
    pub retryable: bool,
    pub not_found: bool,
}

impl LiveKit {
    pub fn new(config: &LiveKitConfig) -> Self {
        let secret = config.api_secret.expose();
        let timeout =
            std::time::Duration::from_secs(u64::from(config.request_timeout_seconds.max(1)));
        Self {
            rooms: RoomClient::with_api_key(&config.url, &config.api_key, secret)
                .with_request_timeout(timeout),
            egress: EgressClient::with_api_key(&config.url, &config.api_key, secret)
                .with_request_timeout(timeout),
            receiver: WebhookReceiver::new(TokenVerifier::with_api_key(&config.api_key, secret)),
            config: config.clone(),
        }
    }

    /// Verifies a webhook (the bare JWT in `Authorization`, the body's SHA-256) and decodes it.
    pub fn receive(&self, body: &str, authorization: &str) -> Result<WebhookEvent, WebhookError> {
        self.receiver.receive(body, authorization)
    }

    /// When an invitation may join: from `join_early` before the start until `grace` after
    /// the end.
    pub fn join_window(&self, inv: &InvitationContext) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            inv.planned_start
                - chrono::Duration::minutes(i64::from(self.config.join_early_minutes)),
            inv.planned_end + chrono::Duration::minutes(i64::from(self.config.grace_minutes)),
        )
    }

    /// A join token for an invitation: identity = the invitation id, name "unit · person",
    /// metadata with unit, tier and role, grants from the template (hosts administer the room
    /// and publish; others publish only if the template lets them), valid until the window
    /// closes.
    pub fn join_token(
        &self,
        inv: &InvitationContext,
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        let (_, closes) = self.join_window(inv);
        let ttl = (closes - now)
            .to_std()
            .map_err(|_| "the join window has closed".to_string())?;
        let host = inv.role == "host";
        let metadata = serde_json::json!({
            "invitation_id": inv.id,
            "meeting_id": inv.meeting_id,
            "unit_id": inv.unit_id,
            "unit": inv.unit_name,
            "person": inv.person_name,
            "tier": inv.tier,
            "role": inv.role,
        });
        AccessToken::with_api_key(&self.config.api_key, self.config.api_secret.expose())
            .with_identity(&inv.id.to_string())
            .with_name(&inv.display_name())
            .with_metadata(&metadata.to_string())
            .with_ttl(ttl)
            .with_grants(VideoGrants {
                room_join: true,
                room: inv.room_name.clone(),
                room_admin: host,
                can_publish: Some(host || inv.can_publish),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                ..Default::default()
            })
            .to_jwt()
            .map_err(|e| format!("cannot sign the join token: {e}"))
    }

    /// The client URL with the server URL and the token filled in.
    pub fn join_url(&self, token: &str) -> String {
        self.config
            .join_url
            .replace("{url}", &percent_encode(&self.config.url))
            .replace("{token}", &percent_encode(token))
    }

    pub fn classify(error: &ServiceError) -> LiveKitFailure {
        use livekit_api::services::ServerError;
        match error {
            ServiceError::Twirp(ServerError::Twirp(code)) => LiveKitFailure {
                message: format!("LiveKit answered {}: {}", code.code, code.msg),
                retryable: matches!(
                    code.code.as_str(),
                    "unavailable"
                        | "internal"
                        | "resource_exhausted"
                        | "deadline_exceeded"
                        | "unknown"
                ),
                not_found: code.code == "not_found",
            },
            // LiveKit answers a token it cannot verify with a plain-text 401, which the client
            // fails to read as a Twirp error. A proxy's HTML error page reads the same, so it
            // stays retryable, but the message names the likely cause.
            ServiceError::Twirp(ServerError::Request(e)) if e.is_decode() => LiveKitFailure {
                message: format!(
                    "LiveKit refused the request without a Twirp error ({e}); a wrong livekit.api_key \
                     or livekit.api_secret gives exactly this"
                ),
                retryable: true,
                not_found: false,
            },
            other => LiveKitFailure {
                message: format!("LiveKit unreachable or failing: {other}"),
                retryable: true,
                not_found: false,
            },
        }
    }
}

/// Percent-encoding for a query value or header parameter (RFC 3986 unreserved characters
/// pass through). A few lines instead of a crate for one function.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percent_encode as encode;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("ws://127.0.0.1:7880"), "ws%3A%2F%2F127.0.0.1%3A7880");
        assert_eq!(encode("a.b-c_d~"), "a.b-c_d~");
    }
}
