//! Conditional writes (AIP-154): etags on every answer, a Set with an etag
//! applies only to the state it names; over HTTP, ETag, If-Match (412) and
//! If-None-Match (304). Requests without them behave as before.

use reqwest::{header, StatusCode};
use settingsd::pb::SetRecordingSettingsRequest;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{helpers::*, http_bridge::*};

fn with_etag(request: SetRecordingSettingsRequest, etag: &str) -> SetRecordingSettingsRequest {
    SetRecordingSettingsRequest {
        etag: etag.to_owned(),
        ..request
    }
}

for_each_kind! {
    #[tokio::test]
    async fn a_set_with_the_current_etag_applies_and_one_with_a_stale_etag_is_aborted_naming_the_current() {
        let app = spawn_app().await;
        let default = app.get(ACCOUNT).await;
        assert_eq!(default.etag, "\"0\"", "the default resource's etag");

        let first = app.set(with_etag(set_request(ACCOUNT, "first"), &default.etag)).await;
        let stale = app
            .try_set(with_etag(set_request(ACCOUNT, "stale"), &default.etag))
            .await
            .unwrap_err();

        assert_eq!(first.etag, format!("\"{}\"", first.revision));
        assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
        assert!(stale.message().contains(&first.etag), "{}", stale.message());
        assert_eq!(app.get(ACCOUNT).await, first, "the stale Set changed nothing");
    }

    #[tokio::test]
    async fn of_two_writers_with_the_same_etag_exactly_one_wins_and_the_other_changes_nothing() {
        let app = spawn_app().await;
        let read = app.set(set_request(ACCOUNT, "read by both")).await;

        let (a, b) = tokio::join!(
            app.try_set(with_etag(
                SetRecordingSettingsRequest { aws_s3_url: Some(S3_URL.into()), ..set_request(ACCOUNT, "writer a") },
                &read.etag,
            )),
            app.try_set(with_etag(
                SetRecordingSettingsRequest { encryption_key_sid: Some(KEY.into()), ..set_request(ACCOUNT, "writer b") },
                &read.etag,
            )),
        );

        let (winner, loser) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            other => panic!("exactly one must win: {other:?}"),
        };
        assert_eq!(loser.code(), Code::Aborted);
        let stored = app.get(ACCOUNT).await;
        assert_eq!(stored, winner);
        let a_won = winner.friendly_name.as_deref() == Some("writer a");
        assert_eq!(stored.aws_s3_url.is_some(), a_won, "the loser's fields are not stored");
        assert_eq!(stored.encryption_key_sid.is_some(), !a_won, "the loser's fields are not stored");
    }

    #[tokio::test]
    async fn a_malformed_etag_is_invalid_argument_naming_etag() {
        let app = spawn_app().await;

        let status = app.try_set(with_etag(set_request(ACCOUNT, "x"), "42")).await.unwrap_err();

        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(details.field_violations[0].field, ETAG_FIELD);
    }

    built_in_only! {
        // The Twilio-shaped HTTP bridge serves the built-in resources only.
        #[tokio::test]
        async fn http_answers_carry_the_etag_and_honour_if_match_and_if_none_match() {
            let app = spawn_app().await;
            let created = post(&app.url(), ACCOUNT, "any", "FriendlyName=first").await;
            let etag = created.headers()[header::ETAG].to_str().unwrap().to_owned();
            let over_grpc = app.get(ACCOUNT).await;

            let unchanged = http()
                .get(app.url())
                .basic_auth(ACCOUNT, Some("any"))
                .header(header::IF_NONE_MATCH, &etag)
                .send()
                .await
                .unwrap();
            let matching = http()
                .post(app.url())
                .basic_auth(ACCOUNT, Some("any"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::IF_MATCH, &etag)
                .body("FriendlyName=second")
                .send()
                .await
                .unwrap();
            let second_etag = matching.headers()[header::ETAG].to_str().unwrap().to_owned();
            let stale = http()
                .post(app.url())
                .basic_auth(ACCOUNT, Some("any"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::IF_MATCH, &etag)
                .body("FriendlyName=stale")
                .send()
                .await
                .unwrap();
            let changed = fetch(&app.url(), ACCOUNT, "any").await;

            assert_eq!(etag, over_grpc.etag);
            assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
            assert_eq!(unchanged.headers()[header::ETAG], etag.as_str());
            assert!(unchanged.bytes().await.unwrap().is_empty());
            assert_eq!(matching.status(), StatusCode::OK);
            assert_ne!(second_etag, etag);
            let message = assert_twilio_error(stale, 412, 20412).await;
            assert!(message.contains(&second_etag), "{message}");
            assert_eq!(changed.headers()[header::ETAG], second_etag.as_str());
            let body: serde_json::Value = changed.json().await.unwrap();
            assert_eq!(body["friendly_name"], "second", "the stale POST changed nothing");
            assert_eq!(body.as_object().unwrap().len(), 8, "the JSON body keeps Twilio's eight fields");
        }
    }
}
