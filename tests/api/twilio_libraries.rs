//! The official Twilio helper libraries, unchanged, against the HTTP bridge,
//! for every resource (`client.video.v1.recording_settings()`,
//! `.composition_settings()`; see `for_each_resource!`).

use std::path::PathBuf;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::helpers::*;

/// The Python with twilio installed: `SETTINGSD_PYTHON`, else the project's
/// `.venv` (which `scripts/test` makes).
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("SETTINGSD_PYTHON") {
        return path.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with twilio: run ./scripts/test (it makes .venv), or set SETTINGSD_PYTHON"
    );
    venv
}

/// The node_modules with twilio: `SETTINGSD_NODE_PATH`, else the one
/// `scripts/test` installs under `.venv/node`.
pub fn node_path() -> PathBuf {
    if let Some(path) = std::env::var_os("SETTINGSD_NODE_PATH") {
        return path.into();
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/node/node_modules");
    assert!(
        installed.join("twilio").exists(),
        "no twilio-node: run ./scripts/test (it installs it), or set SETTINGSD_NODE_PATH"
    );
    installed
}

for_each_resource! {
#[tokio::test]
async fn twilio_python_fetches_creates_and_raises_its_usual_exceptions() {
    let app = spawn_authenticated_app().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/twilio_python.py");

    let output = tokio::time::timeout(
        GUARD,
        Command::new(python())
            .arg(script)
            .arg(format!("http://{}", app.http_addr))
            .args([ACCOUNT, TOKEN, API_KEY, API_SECRET, RESOURCE.name()])
            .output(),
    )
    .await
    .expect("twilio-python finishes")
    .unwrap();

    assert!(
        output.status.success(),
        "twilio-python script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results["fetch_default"]["ok"]["account_sid"], ACCOUNT);
    assert_eq!(results["fetch_default"]["ok"]["friendly_name"], Value::Null);
    assert_eq!(results["fetch_default"]["ok"]["aws_storage_enabled"], false);
    assert_eq!(
        results["create"]["ok"],
        json!({
            "account_sid": ACCOUNT,
            "friendly_name": "My Settings",
            "aws_credentials_sid": CREDENTIAL,
            "aws_s3_url": "https://b.s3.amazonaws.com/p/",
            "aws_storage_enabled": true,
            "encryption_key_sid": null,
            "encryption_enabled": false,
            "url": TWILIO_URL,
        })
    );
    assert_eq!(results["fetch_by_key"]["ok"], results["create"]["ok"]);
    assert_eq!(
        results["create_by_key"]["ok"]["friendly_name"],
        "Set By Key"
    );
    assert_eq!(
        results["missing_friendly_name"],
        json!({
            "status": 400,
            "code": 20001,
            // twilio-python prefixes our message with what it was doing.
            "message": "Unable to create record: Missing required parameter FriendlyName in the post body",
        })
    );
    assert_eq!(results["invalid_url"]["status"], 400);
    assert_eq!(results["invalid_url"]["code"], 20001);
    assert!(results["invalid_url"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Unable to create record: Invalid parameter AwsS3Url: "));
    assert_eq!(results["wrong_token"]["status"], 401);
    assert_eq!(results["wrong_token"]["code"], 20003);
    assert_eq!(results["fetch_after"]["ok"]["friendly_name"], "Set By Key");
    assert_eq!(
        results["fetch_after"]["ok"]["aws_s3_url"],
        "https://b.s3.amazonaws.com/p/"
    );
}

#[tokio::test]
async fn twilio_node_fetches_creates_and_raises_its_usual_exceptions() {
    let app = spawn_authenticated_app().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/twilio_node.js");

    let output = tokio::time::timeout(
        GUARD,
        Command::new("node")
            .arg(script)
            .arg(format!("http://{}", app.http_addr))
            .args([ACCOUNT, TOKEN, API_KEY, API_SECRET, RESOURCE.name()])
            .env("NODE_PATH", node_path())
            .output(),
    )
    .await
    .expect("twilio-node finishes")
    .unwrap();

    assert!(
        output.status.success(),
        "twilio-node script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results["fetch_default"]["ok"]["accountSid"], ACCOUNT);
    assert_eq!(
        results["create"]["ok"],
        json!({
            "accountSid": ACCOUNT,
            "friendlyName": "My Settings",
            "awsCredentialsSid": null,
            "awsS3Url": null,
            "awsStorageEnabled": false,
            "encryptionKeySid": format!("CR{}", "b".repeat(32)),
            "encryptionEnabled": true,
            "url": TWILIO_URL,
        })
    );
    assert_eq!(results["fetch_by_key"]["ok"], results["create"]["ok"]);
    assert_eq!(results["create_by_key"]["ok"]["friendlyName"], "Set By Key");
    assert_eq!(results["missing_friendly_name"]["status"], 400);
    assert_eq!(results["missing_friendly_name"]["code"], 20001);
    assert_eq!(
        results["missing_friendly_name"]["message"],
        "Missing required parameter FriendlyName in the post body"
    );
    assert_eq!(results["wrong_token"]["status"], 401);
    assert_eq!(results["wrong_token"]["code"], 20003);
}
}
