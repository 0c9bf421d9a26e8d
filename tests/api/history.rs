//! History and rollback (AIP-162): past states newest first, in pages;
//! rollback writes a new revision equal to a past state, across restarts;
//! watchers see it; unknown revisions are NOT_FOUND.

use settingsd::pb::{ListRecordingSettingsRevisionsRequest, RollbackRecordingSettingsRequest};
use tonic::Code;

use crate::helpers::*;

impl TestApp {
    pub(crate) async fn history(
        &self,
        account: &str,
        page_size: i32,
        page_token: &str,
    ) -> settingsd::contract::RevisionsPageMessage {
        let request = tonic::Request::new(settingsd::contract::ListRevisionsMessage::from(
            ListRecordingSettingsRevisionsRequest {
                account_sid: account.into(),
                page_size,
                page_token: page_token.into(),
            },
        ));
        self.resource_client()
            .list_revisions(request)
            .await
            .expect("history")
    }

    async fn try_rollback(
        &self,
        account: &str,
        revision: u64,
    ) -> Result<SettingsMessage, tonic::Status> {
        let request = tonic::Request::new(settingsd::contract::RollbackMessage::from(
            RollbackRecordingSettingsRequest {
                account_sid: account.into(),
                revision,
                etag: String::new(),
            },
        ));
        self.resource_client().rollback(request).await
    }
}

for_each_kind! {
    #[tokio::test]
    async fn history_lists_past_states_newest_first_in_pages() {
        let app = spawn_app().await;
        let mut written = Vec::new();
        for i in 0..5 {
            written.push(app.set(set_request(ACCOUNT, &format!("v{i}"))).await);
            app.set(set_request(OTHER_ACCOUNT, "another account")).await;
        }
        written.reverse();

        let first = app.history(ACCOUNT, 2, "").await;
        let second = app.history(ACCOUNT, 2, &first.next_page_token).await;
        let third = app.history(ACCOUNT, 2, &second.next_page_token).await;
        let all = app.history(ACCOUNT, 0, "").await;

        assert_eq!(first.revisions, written[0..2]);
        assert_eq!(second.revisions, written[2..4]);
        assert_eq!(third.revisions, written[4..]);
        assert_eq!(third.next_page_token, "");
        assert_eq!(all.revisions, written);
    }

    #[tokio::test]
    async fn rollback_writes_a_new_revision_equal_to_the_past_state_across_a_restart_and_watchers_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let app = spawn_app_on(dir.path()).await.for_resource(RESOURCE);
        let good = app.set(full_set_request(ACCOUNT)).await;
        let bad = app
            .set(settingsd::pb::SetRecordingSettingsRequest {
                aws_storage_enabled: Some(false),
                encryption_enabled: Some(false),
                encryption_key_sid: Some(String::new()),
                ..set_request(ACCOUNT, "a bad setting")
            })
            .await;
        app.stop().await.unwrap();
        let app = spawn_app_on(dir.path()).await.for_resource(RESOURCE);
        let mut watcher = app.watch(ACCOUNT, bad.revision + 1).await;

        let restored = app.try_rollback(ACCOUNT, good.revision).await.unwrap();

        assert!(restored.revision > bad.revision, "a rollback is a new revision");
        let fields = |s: &SettingsMessage| SettingsMessage { revision: 0, update_time: None, etag: String::new(), ..s.clone() };
        assert_eq!(fields(&restored), fields(&good));
        assert_eq!(app.get(ACCOUNT).await, restored);
        assert_eq!(next_settings(&mut watcher).await, restored);
        let history = app.history(ACCOUNT, 3, "").await;
        assert_eq!(history.revisions, vec![restored, bad, good]);
    }

    #[tokio::test]
    async fn rollback_to_a_revision_not_in_the_accounts_history_is_not_found() {
        let app = spawn_app().await;
        let other = app.set(set_request(OTHER_ACCOUNT, "other's")).await;
        let own = app.set(set_request(ACCOUNT, "own")).await;

        let unknown = app.try_rollback(ACCOUNT, own.revision + 1000).await.unwrap_err();
        let foreign = app.try_rollback(ACCOUNT, other.revision).await.unwrap_err();
        let zero = app.try_rollback(ACCOUNT, 0).await.unwrap_err();

        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
        assert_eq!(foreign.code(), Code::NotFound, "another account's revision: {foreign:?}");
        assert_eq!(zero.code(), Code::InvalidArgument);
        assert!(zero.message().contains("revision"));
        assert_eq!(app.get(ACCOUNT).await, own, "nothing changed");
    }
}

/// Adds to a stopped store's change log a change of ACCOUNT whose record
/// was never written (as a crash between the two leaves it), after the
/// last commit recorded as durable (`durable_through`): `kind` is the
/// change's resource byte.
fn log_cut_off_change(
    dir: &std::path::Path,
    kind: u8,
    state: &settingsd::domain::Settings,
    durable_through: u64,
) {
    {
        let db = sled::open(dir).unwrap();
        let mut value = vec![kind, ACCOUNT.len() as u8];
        value.extend_from_slice(ACCOUNT.as_bytes());
        value.extend_from_slice(&settingsd::store::codec::encode(&state.clone().into()));
        db.open_tree("changes")
            .unwrap()
            .insert(state.revision.to_be_bytes(), value)
            .unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("durable_through", &durable_through.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    wait_until_released(dir);
}

/// A crash between a write's change (written first) and its record leaves
/// the change alone in the log; opening the store replays it into the
/// record, so readers and watchers agree. Simulated by adding such a change
/// behind a stopped server's back.
#[tokio::test]
async fn a_change_whose_record_a_crash_cut_off_is_replayed_when_the_store_opens() {
    use settingsd::domain::{AccountSid, FriendlyName, Settings};
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    let written = app.set(set_request(ACCOUNT, "written")).await;
    app.stop().await.unwrap();
    let mut cut_off = Settings::default_for(AccountSid::parse(ACCOUNT).unwrap());
    cut_off.friendly_name = Some(FriendlyName::parse("cut off").unwrap());
    cut_off.revision = written.revision + 10;
    cut_off.update_time = Some(std::time::SystemTime::now());
    log_cut_off_change(
        dir.path(),
        0, // Recording Settings, the first built-in resource
        &cut_off,
        written.revision,
    );

    let app = spawn_app_on(dir.path()).await;
    let got = app.get(ACCOUNT).await;
    let history = app.history(ACCOUNT, 10, "").await;

    assert_eq!(got.friendly_name.as_deref(), Some("cut off"));
    assert_eq!(got.revision, cut_off.revision);
    assert_eq!(history.revisions, vec![got, written]);
}

/// The same for a reset: its change (resource byte with 0x80 set) survived
/// a crash but the record's removal did not; opening the store deletes the
/// record, so reads answer the default as the history says.
#[tokio::test]
async fn a_reset_whose_record_removal_a_crash_cut_off_is_replayed_when_the_store_opens() {
    use settingsd::domain::{AccountSid, Settings};
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    let written = app.set(set_request(ACCOUNT, "written")).await;
    app.stop().await.unwrap();
    let mut reset = Settings::default_for(AccountSid::parse(ACCOUNT).unwrap());
    reset.revision = written.revision + 10;
    reset.update_time = Some(std::time::SystemTime::now());
    // 0x80 in the resource byte marks a reset.
    log_cut_off_change(
        dir.path(),
        0x80, // Recording Settings (0) reset
        &reset,
        written.revision,
    );

    let app = spawn_app_on(dir.path()).await;
    let got = app.get(ACCOUNT).await;
    let history = app.history(ACCOUNT, 10, "").await;

    assert_eq!(got.revision, 0, "deleted: the default resource");
    assert_eq!(got.friendly_name, None);
    assert_eq!(history.revisions.len(), 2);
    assert_eq!(history.revisions[0].revision, reset.revision);
    assert_eq!(history.revisions[0].friendly_name, None);
    assert_eq!(history.revisions[1], written);
}
