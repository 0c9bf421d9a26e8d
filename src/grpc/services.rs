//! The gRPC services: one per settings resource, each a thin binding of its
//! generated trait to the shared [`SettingsApi`], and the operators'
//! `AdminService`.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::{Request, Response, Status};

use super::{
    convert::{optional_account, optional_resource, recorded_request, replacement, to_message},
    generic::{render_declared, settings_replacement},
    watch::WatchMessages,
    SettingsApi,
};
use crate::{
    auth::Caller,
    contract::{
        pb::{self, admin_service_server::AdminService},
        SettingsChangeMessage,
    },
    domain::{Field, ValidationError, Violation},
    error::Error,
    kinds::Catalog,
    request_log::RequestLog,
    resource::Resource,
    store::{replace_changed, Record, Selector, StoredSettings},
};

/// Binds one resource's generated service trait to [`SettingsApi`]: the
/// handlers only convert the resource's messages to the shared shapes and
/// back. A new resource is one invocation.
macro_rules! settings_service {
    (
        $(#[$doc:meta])*
        $name:ident, $resource:expr, $server:ident :: $service:ident,
        $get_rpc:ident($get:ident), $set_rpc:ident($set:ident) -> $settings:ident,
        $watch_rpc:ident($watch:ident) -> $stream:ident of $change:ident,
        $list_rpc:ident($list:ident) -> $page:ident,
        $rollback_rpc:ident($rollback:ident)
    ) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(pub SettingsApi);

        #[tonic::async_trait]
        impl pb::$server::$service for $name {
            type $stream = WatchStream<pb::$change>;

            #[tracing::instrument(level = "debug", skip_all, fields(resource = %$resource, account))]
            async fn $get_rpc(
                &self,
                request: Request<pb::$get>,
            ) -> Result<Response<pb::$settings>, Status> {
                observed(&self.0, stringify!($get_rpc), async {
                    let (metadata, _, message) = request.into_parts();
                    let answer = self.0.get($resource, &metadata, message.into()).await?;
                    Ok(Response::new(answer.into()))
                })
                .await
            }

            #[tracing::instrument(level = "debug", skip_all, fields(resource = %$resource, account))]
            async fn $set_rpc(
                &self,
                request: Request<pb::$set>,
            ) -> Result<Response<pb::$settings>, Status> {
                observed(&self.0, stringify!($set_rpc), async {
                    let (metadata, _, message) = request.into_parts();
                    let answer = self.0.set($resource, &metadata, message.into()).await?;
                    Ok(Response::new(answer.into()))
                })
                .await
            }

            #[tracing::instrument(level = "debug", skip_all, fields(resource = %$resource, account))]
            async fn $watch_rpc(
                &self,
                request: Request<pb::$watch>,
            ) -> Result<Response<Self::$stream>, Status> {
                observed(&self.0, stringify!($watch_rpc), async {
                    let (metadata, _, message) = request.into_parts();
                    let messages = self.0.watch($resource, &metadata, message.into()).await?;
                    Ok(Response::new(watch_stream(messages)))
                })
                .await
            }

            #[tracing::instrument(level = "debug", skip_all, fields(resource = %$resource, account))]
            async fn $list_rpc(
                &self,
                request: Request<pb::$list>,
            ) -> Result<Response<pb::$page>, Status> {
                observed(&self.0, stringify!($list_rpc), async {
                    let (metadata, _, message) = request.into_parts();
                    let page = self.0.list_revisions($resource, &metadata, message.into()).await?;
                    Ok(Response::new(page.into()))
                })
                .await
            }

            #[tracing::instrument(level = "debug", skip_all, fields(resource = %$resource, account))]
            async fn $rollback_rpc(
                &self,
                request: Request<pb::$rollback>,
            ) -> Result<Response<pb::$settings>, Status> {
                observed(&self.0, stringify!($rollback_rpc), async {
                    let (metadata, _, message) = request.into_parts();
                    let answer = self.0.rollback($resource, &metadata, message.into()).await?;
                    Ok(Response::new(answer.into()))
                })
                .await
            }
        }
    };
}

/// Runs a handler and counts it: its method, its status code, its time (for
/// a watch, the time to start the stream).
pub(super) async fn observed<T>(
    api: &SettingsApi,
    method: &'static str,
    handler: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let arrived = std::time::SystemTime::now();
    let started = std::time::Instant::now();
    let (result, account) = if api.requests.is_on() {
        RequestLog::track(handler).await
    } else {
        (handler.await, None)
    };
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    api.observe(method, code, arrived, started.elapsed(), account);
    result
}

/// A watch as a resource's service streams it.
pub type WatchStream<M> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<M, Status>> + Send>>;

/// The core's watch messages in a resource's own message type.
fn watch_stream<M>(messages: WatchMessages) -> WatchStream<M>
where
    M: From<SettingsChangeMessage> + Send + 'static,
{
    Box::pin(ReceiverStream::new(messages).map(|m| m.map(M::from).map_err(Status::from)))
}

settings_service!(
    /// `settingsd.v1.RecordingSettingsService`. Cheap to clone.
    RecordingSettingsGrpc, Resource::Recording,
    recording_settings_service_server::RecordingSettingsService,
    get_recording_settings(GetRecordingSettingsRequest),
    set_recording_settings(SetRecordingSettingsRequest) -> RecordingSettings,
    watch_recording_settings(WatchRecordingSettingsRequest)
        -> WatchRecordingSettingsStream of RecordingSettingsChange,
    list_recording_settings_revisions(ListRecordingSettingsRevisionsRequest)
        -> ListRecordingSettingsRevisionsResponse,
    rollback_recording_settings(RollbackRecordingSettingsRequest)
);

settings_service!(
    /// `settingsd.v1.CompositionSettingsService`. Cheap to clone.
    CompositionSettingsGrpc, Resource::Composition,
    composition_settings_service_server::CompositionSettingsService,
    get_composition_settings(GetCompositionSettingsRequest),
    set_composition_settings(SetCompositionSettingsRequest) -> CompositionSettings,
    watch_composition_settings(WatchCompositionSettingsRequest)
        -> WatchCompositionSettingsStream of CompositionSettingsChange,
    list_composition_settings_revisions(ListCompositionSettingsRevisionsRequest)
        -> ListCompositionSettingsRevisionsResponse,
    rollback_composition_settings(RollbackCompositionSettingsRequest)
);

/// The `settingsd.v1.AdminService` implementation: operator-only RPCs over
/// every account. Shares the settings services' store, credentials and
/// in-flight limit. Cheap to clone.
#[derive(Clone)]
pub struct AdminGrpc {
    api: SettingsApi,
    /// The kinds the server serves: an export renders a declared kind's
    /// records in its message type, and an import checks a declared
    /// record's value against it before anything is written.
    catalog: Arc<Catalog>,
}

/// The most records one `ImportSettings` call takes (they are held in
/// memory, a few hundred bytes each, until all are validated).
const MAX_IMPORT_RECORDS: usize = 100_000;

/// How many exported records may wait for a slow client: the store's scan
/// pauses behind them, so an export's memory is bounded.
const EXPORT_BUFFER: usize = 64;

impl AdminGrpc {
    pub fn new(api: SettingsApi, catalog: Arc<Catalog>) -> AdminGrpc {
        AdminGrpc { api, catalog }
    }

    /// Refuses tenants: admin RPCs are for operators (or anyone in open mode).
    fn operator(&self, request: &Request<impl Sized>) -> Result<(), Status> {
        match self.api.caller(request.metadata())? {
            Caller::Account(caller) => Err(Error::OperatorOnly { caller }.into()),
            Caller::Anonymous | Caller::Operator(_) => Ok(()),
        }
    }

    /// Streams the store's scan of `resources` to an operator, as `message`
    /// renders each record. The stream ends at the first record that does
    /// not decode, with its error: a backup must not skip a record silently.
    fn export<T: Send + 'static>(
        &self,
        request: &Request<impl Sized>,
        resources: &[Resource],
        message: impl Fn(&SettingsApi, StoredSettings) -> Result<T, Error> + Send + 'static,
    ) -> Result<ReceiverStream<Result<T, Status>>, Status> {
        let slot = self.api.start()?;
        if let Caller::Account(caller) = self.api.caller(request.metadata())? {
            return Err(Error::OperatorOnly { caller }.into());
        }
        let (tx, rx) = mpsc::channel(EXPORT_BUFFER);
        let api = self.api.clone();
        let mut scan = api.store.scan(resources);
        tokio::spawn(async move {
            let _slot = slot;
            let mut exported = 0_u64;
            while let Some(record) = scan.next().await {
                let item = record
                    .and_then(|record| message(&api, record))
                    .map_err(Status::from);
                let failed = item.is_err();
                if tx.send(item).await.is_err() {
                    tracing::info!(exported, "export abandoned by the client");
                    return;
                }
                if failed {
                    return;
                }
                exported += 1;
            }
            tracing::info!(exported, "export finished");
        });
        Ok(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    type ExportSettingsStream = ReceiverStream<Result<pb::ExportedSettings, Status>>;

    #[tracing::instrument(skip_all)]
    async fn inject_fault(
        &self,
        request: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::Fault>, Status> {
        self.operator(&request)?;
        let fault = self
            .api
            .faults
            .add(request.get_ref(), self.api.store.resources())
            .map_err(Error::from)?;
        tracing::info!(?fault, "fault rule added");
        Ok(Response::new(fault))
    }

    async fn list_faults(
        &self,
        request: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        self.operator(&request)?;
        Ok(Response::new(pb::ListFaultsResponse {
            faults: self.api.faults.list(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn clear_faults(
        &self,
        request: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        self.operator(&request)?;
        let cleared = self.api.faults.clear();
        tracing::info!(cleared, "fault rules cleared");
        Ok(Response::new(pb::ClearFaultsResponse {
            cleared: u32::try_from(cleared).unwrap_or(u32::MAX),
        }))
    }
    #[tracing::instrument(skip_all, fields(account = %request.get_ref().account_sid, resource = %request.get_ref().resource))]
    async fn reset_settings(
        &self,
        request: Request<pb::ResetSettingsRequest>,
    ) -> Result<Response<pb::ResetSettingsResponse>, Status> {
        self.operator(&request)?;
        let _slot = self.api.start()?;
        let selector = Selector {
            resource: optional_resource(&request.get_ref().resource, self.api.store.resources())
                .map_err(Error::from)?,
            account: optional_account(&request.get_ref().account_sid).map_err(Error::from)?,
        };
        let (reset_count, revision) = self.api.store.reset(selector).await?;
        Ok(Response::new(pb::ResetSettingsResponse {
            reset_count,
            revision,
        }))
    }

    async fn list_recent_requests(
        &self,
        request: Request<pb::ListRecentRequestsRequest>,
    ) -> Result<Response<pb::ListRecentRequestsResponse>, Status> {
        self.operator(&request)?;
        let account = optional_account(&request.get_ref().account_sid).map_err(Error::from)?;
        let limit = usize::try_from(request.get_ref().limit).unwrap_or(usize::MAX);
        let requests = self.api.requests.recent(account.as_ref(), limit);
        Ok(Response::new(pb::ListRecentRequestsResponse {
            requests: requests.into_iter().map(recorded_request).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn import_settings(
        &self,
        request: Request<tonic::Streaming<pb::ImportSettingsRequest>>,
    ) -> Result<Response<pb::ImportSettingsResponse>, Status> {
        use pb::exported_settings::Settings;
        self.operator(&request)?;
        let _slot = self.api.start()?;
        let mut stream = request.into_inner();
        let mut records = Vec::new();
        while let Some(message) = stream.message().await? {
            let index = records.len() + 1;
            if index > MAX_IMPORT_RECORDS {
                return Err(Status::resource_exhausted(format!(
                    "an import takes at most {MAX_IMPORT_RECORDS} records: split the file, \
                     or import it offline (`settingsd import --data-dir`)"
                )));
            }
            let invalid = |error| Error::InvalidRecord { index, error };
            let replacement = match message.record.and_then(|r| r.settings) {
                Some(Settings::DeclaredSettings(settings)) => {
                    settings_replacement(&self.catalog, settings)
                }
                settings => match (pb::ExportedSettings { settings }).into_parts() {
                    Some((resource, m)) => replacement(resource, &m),
                    None => Err(ValidationError {
                        field: Field::Record,
                        violation: Violation::Missing,
                    }),
                },
            };
            records.push(replacement.map_err(invalid)?);
        }
        let (written, unchanged) = replace_changed(&*self.api.store, records).await?;
        tracing::info!(written, unchanged, "settings imported");
        Ok(Response::new(pb::ImportSettingsResponse {
            written: written as u64,
            unchanged: unchanged as u64,
        }))
    }

    type ExportRecordingSettingsStream = ReceiverStream<Result<pb::RecordingSettings, Status>>;

    #[tracing::instrument(skip_all)]
    async fn export_settings(
        &self,
        request: Request<pb::ExportSettingsRequest>,
    ) -> Result<Response<Self::ExportSettingsStream>, Status> {
        // Every kind the store keeps, declared ones included: a backup
        // must hold everything a restore needs.
        let resources = self.api.store.resources().to_vec();
        let catalog = Arc::clone(&self.catalog);
        let stream = self.export(&request, &resources, move |api, stored| {
            let resource = stored.resource;
            match stored.record {
                Record::Twilio(settings) => Ok(pb::ExportedSettings::new(
                    resource,
                    to_message(settings, api.url(resource)),
                )),
                Record::Message(record) => {
                    let kind = catalog.of(resource).ok_or_else(|| {
                        Error::Storage(format!(
                            "the store holds kind {resource}, which the server does not serve"
                        ))
                    })?;
                    Ok(pb::ExportedSettings::declared(render_declared(
                        kind, record,
                    )))
                }
            }
        })?;
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all)]
    async fn export_recording_settings(
        &self,
        request: Request<pb::ExportRecordingSettingsRequest>,
    ) -> Result<Response<Self::ExportRecordingSettingsStream>, Status> {
        // Only Recording Settings: a bad record of another resource must
        // not fail the export of clients that know nothing of it.
        let stream = self.export(&request, &[Resource::Recording], |api, record| {
            Ok(to_message(record.record.into_twilio()?, api.url(record.resource)).into())
        })?;
        Ok(Response::new(stream))
    }
}
