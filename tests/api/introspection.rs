//! What operators and grpcurl see: health, reflection (v1 and v1alpha), and
//! grpcurl itself against the server.

use tokio_stream::StreamExt;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::helpers::*;

const SERVICE: &str = "settingsd.v1.RecordingSettingsService";

#[tokio::test]
async fn health_says_serving_for_every_service_and_the_server() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(channel(app.grpc_addr).await);
    let resources = Resource::ALL.map(|r| r.spec().grpc_service);

    for service in resources
        .into_iter()
        .chain(["settingsd.v1.AdminService", ""])
    {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_v1_lists_every_settings_service() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(channel(app.grpc_addr).await);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();

    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == SERVICE), "{names:?}");
    for resource in Resource::ALL {
        let service = resource.spec().grpc_service;
        assert!(names.iter().any(|n| n == service), "{service}: {names:?}");
    }
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_service() {
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(channel(app.grpc_addr).await);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();

    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    assert!(list.service.iter().any(|s| s.name == SERVICE));
}

#[tokio::test]
async fn grpcurl_can_list_describe_and_call_every_settings_rpc_and_health() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();

    let list = run_grpcurl(&[&addr, "list"]).await;
    let describe = run_grpcurl(&[
        &addr,
        "describe",
        "settingsd.v1.SetRecordingSettingsRequest",
    ])
    .await;
    let set = run_grpcurl(&[
        "-d",
        &format!(r#"{{"account_sid": "{ACCOUNT}", "friendly_name": "from grpcurl", "aws_s3_url": "{S3_URL}"}}"#),
        &addr,
        "settingsd.v1.RecordingSettingsService/SetRecordingSettings",
    ]).await;
    let get = run_grpcurl(&[
        "-d",
        &format!(r#"{{"account_sid": "{ACCOUNT}"}}"#),
        &addr,
        "settingsd.v1.RecordingSettingsService/GetRecordingSettings",
    ])
    .await;
    let set_composition = run_grpcurl(&[
        "-d",
        &format!(r#"{{"account_sid": "{ACCOUNT}", "friendly_name": "compositions from grpcurl"}}"#),
        &addr,
        "settingsd.v1.CompositionSettingsService/SetCompositionSettings",
    ])
    .await;
    let get_composition = run_grpcurl(&[
        "-d",
        &format!(r#"{{"account_sid": "{ACCOUNT}"}}"#),
        &addr,
        "settingsd.v1.CompositionSettingsService/GetCompositionSettings",
    ])
    .await;
    let health = run_grpcurl(&[&addr, "grpc.health.v1.Health/Check"]).await;
    let composition_health = run_grpcurl(&[
        "-d",
        r#"{"service": "settingsd.v1.CompositionSettingsService"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    let export = run_grpcurl(&[&addr, "settingsd.v1.AdminService/ExportRecordingSettings"]).await;
    let export_all = run_grpcurl(&[&addr, "settingsd.v1.AdminService/ExportSettings"]).await;

    assert!(list.contains(SERVICE), "{list}");
    assert!(list.contains("grpc.health.v1.Health"), "{list}");
    assert!(list.contains("settingsd.v1.AdminService"), "{list}");
    assert!(describe.contains("aws_s3_url"), "{describe}");
    assert!(
        describe.contains("Required on every call"),
        "describe shows the field docs: {describe}"
    );
    let set: serde_json::Value = serde_json::from_str(&set).unwrap();
    let get: serde_json::Value = serde_json::from_str(&get).unwrap();
    assert_eq!(set["friendlyName"], "from grpcurl");
    assert_eq!(get["friendlyName"], "from grpcurl");
    assert_eq!(get["awsS3Url"], S3_URL);
    assert!(health.contains("SERVING"), "{health}");
    assert!(export.contains(ACCOUNT), "{export}");
    assert!(export.contains("from grpcurl"), "{export}");
    assert!(
        list.contains("settingsd.v1.CompositionSettingsService"),
        "{list}"
    );
    let set_composition: serde_json::Value = serde_json::from_str(&set_composition).unwrap();
    let get_composition: serde_json::Value = serde_json::from_str(&get_composition).unwrap();
    assert_eq!(set_composition["friendlyName"], "compositions from grpcurl");
    assert_eq!(get_composition, set_composition);
    assert_eq!(get_composition["url"], COMPOSITION_URL);
    assert!(
        composition_health.contains("SERVING"),
        "{composition_health}"
    );
    assert!(
        !export.contains("compositions from grpcurl"),
        "the old export lists Recording Settings only: {export}"
    );
    assert!(export_all.contains("recordingSettings"), "{export_all}");
    assert!(export_all.contains("compositionSettings"), "{export_all}");
    assert!(
        export_all.contains("compositions from grpcurl"),
        "{export_all}"
    );
}
