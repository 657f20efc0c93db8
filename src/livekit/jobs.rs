//! Room lifecycle jobs: `room.create` shortly before the start, `room.record` at the start
//! when the template records, `room.reconcile` every few seconds while live, `room.close`
//! after the end plus grace. Each is idempotent and does nothing for a meeting that has moved
//! on (another sequence, cancelled, finished).

use std::collections::HashMap;
use std::sync::Arc;

use livekit_api::services::egress::{EgressOutput, RoomCompositeOptions};
use livekit_api::services::room::CreateRoomOptions;
use serde::Deserialize;

use super::LiveKit;
use crate::domain::attendance::connection;
use crate::jobs::{Clock, Handler, JobFailure};
use crate::store::{MeetingRecord, NewJob, Store};

#[derive(Deserialize)]
struct RoomJob {
    meeting_id: i64,
    sequence: Option<i64>,
    round: Option<i64>,
}

pub struct RoomJobs {
    store: Store,
    livekit: Arc<LiveKit>,
    clock: Arc<dyn Clock>,
}

fn failure(e: &livekit_api::services::ServiceError) -> JobFailure {
    let f = LiveKit::classify(e);
    if f.retryable {
        JobFailure::Retry(f.message)
    } else {
        JobFailure::Permanent(f.message)
    }
}

impl RoomJobs {
    pub fn new(store: Store, livekit: Arc<LiveKit>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            store,
            livekit,
            clock,
        })
    }

    pub fn handlers(self: &Arc<Self>) -> HashMap<String, Handler> {
        let mut handlers: HashMap<String, Handler> = HashMap::new();
        for kind in ["room.create", "room.record", "room.reconcile", "room.close"] {
            let me = Arc::clone(self);
            handlers.insert(
                kind.into(),
                Arc::new(move |payload| {
                    let me = Arc::clone(&me);
                    Box::pin(async move {
                        let job: RoomJob = serde_json::from_value(payload)
                            .map_err(|e| JobFailure::Permanent(format!("bad payload: {e}")))?;
                        match kind {
                            "room.create" => me.create(job).await,
                            "room.record" => me.record(job).await,
                            "room.reconcile" => me.reconcile(job).await,
                            _ => me.close(job).await,
                        }
                    })
                }),
            );
        }
        handlers
    }

    /// The meeting, if the job still concerns it as it is.
    async fn current(&self, job: &RoomJob) -> Result<Option<MeetingRecord>, JobFailure> {
        let meeting = self.store.meeting(job.meeting_id).await?;
        let stale = job.sequence.is_some_and(|s| s != meeting.sequence);
        Ok((!stale && meeting.status != "cancelled").then_some(meeting))
    }

    async fn create(&self, job: RoomJob) -> Result<(), JobFailure> {
        let Some(meeting) = self.current(&job).await? else {
            return Ok(());
        };
        if meeting.status == "finished" {
            return Ok(());
        }
        let invited = self.store.room_invitation_count(&meeting.room_name).await?;
        let config = &self.livekit.config;
        let options = CreateRoomOptions {
            empty_timeout: config.empty_timeout_seconds,
            max_participants: u32::try_from(invited).unwrap_or(u32::MAX).saturating_add(config.participant_margin),
            metadata: serde_json::json!({"dispatch_id": meeting.dispatch_id, "meeting_id": meeting.id, "title": meeting.title})
                .to_string(),
            ..Default::default()
        };
        // CreateRoom is idempotent: a retry, or a room auto-created by an early joiner, is fine.
        let room = self
            .livekit
            .rooms
            .create_room(&meeting.room_name, options)
            .await
            .map_err(|e| failure(&e))?;
        self.store.set_room_sid(meeting.id, &room.sid).await?;
        tracing::info!(meeting = meeting.id, room = %meeting.room_name, sid = %room.sid, "room created");
        Ok(())
    }

    async fn record(&self, job: RoomJob) -> Result<(), JobFailure> {
        let Some(meeting) = self.current(&job).await? else {
            return Ok(());
        };
        if !meeting.record || meeting.status == "finished" {
            return Ok(());
        }
        if let (Some(_), Some(status), _) = self.store.recording(meeting.id).await?
            && status != "EGRESS_FAILED"
        {
            return Ok(()); // already recording
        }
        let path = format!(
            "{}/{}-{}.mp4",
            self.livekit.config.recordings_path.trim_end_matches('/'),
            meeting.room_name,
            meeting.planned_start.format("%Y%m%dT%H%M")
        );
        let output = livekit_protocol::EncodedFileOutput {
            filepath: path.clone(),
            file_type: livekit_protocol::EncodedFileType::Mp4 as i32,
            ..Default::default()
        };
        let info = self
            .livekit
            .egress
            .start_room_composite_egress(
                &meeting.room_name,
                vec![EgressOutput::File(output)],
                RoomCompositeOptions::default(),
            )
            .await
            .map_err(|e| failure(&e))?;
        let status = livekit_protocol::EgressStatus::try_from(info.status)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| info.status.to_string());
        self.store
            .set_recording(meeting.id, &info.egress_id, &status, &path)
            .await?;
        Ok(())
    }

    async fn reconcile(&self, job: RoomJob) -> Result<(), JobFailure> {
        let meeting = self.store.meeting(job.meeting_id).await?;
        if meeting.status != "live" {
            return Ok(()); // not live (yet, or any more): nothing to compare
        }
        let participants = self
            .livekit
            .rooms
            .list_participants(&meeting.room_name)
            .await
            .map_err(|e| failure(&e))?;
        let present: Vec<_> = participants.iter().map(connection).collect();
        let now = self.clock.now();
        let (added, closed) = self
            .store
            .reconcile_room(&meeting.room_name, &present, now)
            .await?;
        if added + closed > 0 {
            tracing::warn!(
                meeting = meeting.id,
                added,
                closed,
                "reconciliation repaired missed webhooks"
            );
        }
        let round = job.round.unwrap_or(1) + 1;
        let every = chrono::Duration::seconds(i64::from(self.livekit.config.reconcile_seconds));
        self.store
            .enqueue(&[NewJob {
                kind: "room.reconcile".into(),
                payload: serde_json::json!({"meeting_id": meeting.id, "round": round}),
                run_at: now + every,
                dedupe_key: Some(format!("room.reconcile:{}:{round}", meeting.id)),
            }])
            .await?;
        Ok(())
    }

    async fn close(&self, job: RoomJob) -> Result<(), JobFailure> {
        // Unlike the others, a cancelled meeting's room is closed too.
        let meeting = self.store.meeting(job.meeting_id).await?;
        if job.sequence.is_some_and(|s| s != meeting.sequence) && meeting.status != "cancelled" {
            return Ok(());
        }
        match self.livekit.rooms.delete_room(&meeting.room_name).await {
            Ok(()) => {}
            Err(e) if LiveKit::classify(&e).not_found => {} // already gone
            Err(e) => return Err(failure(&e)),
        }
        // room_finished normally records the end; if that event is lost, the close does.
        if meeting.status == "live" || meeting.status == "scheduled" {
            self.store
                .finish_room(&meeting.room_name, self.clock.now())
                .await?;
        }
        Ok(())
    }
}
