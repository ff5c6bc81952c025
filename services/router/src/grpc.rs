//! The gRPC face of the configuration store.

use std::sync::Arc;

use carrier_proto::config_v1 as pb;
use carrier_proto::config_v1::config_service_server::{ConfigService, ConfigServiceServer};
use tonic::{Request, Response, Status};

use crate::config_store::ConfigStore;

pub fn service(store: Arc<ConfigStore>) -> ConfigServiceServer<Service> {
    ConfigServiceServer::new(Service { store }).max_decoding_message_size(1024 * 1024)
}

pub struct Service {
    store: Arc<ConfigStore>,
}

#[tonic::async_trait]
impl ConfigService for Service {
    async fn resolve(
        &self,
        request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        Ok(Response::new(self.store.resolve(request.get_ref()).await?))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        let request = request.into_inner();
        let source = if request.client_assertion.is_empty() {
            self.store
                .authenticate(&request.client_id, &request.client_secret)
                .await?
        } else {
            self.store
                .authenticate_assertion(&request.client_id, &request.client_assertion, &request.audience)
                .await?
        };
        Ok(Response::new(source))
    }

    async fn get_source(&self, request: Request<pb::GetByIdRequest>) -> Result<Response<pb::Source>, Status> {
        Ok(Response::new(self.store.get_source(&request.get_ref().id).await?))
    }

    async fn get_destination(
        &self,
        request: Request<pb::GetByIdRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        Ok(Response::new(
            self.store.get_destination(&request.get_ref().id).await?,
        ))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetByIdRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(
            self.store.get_organization(&request.get_ref().id).await?,
        ))
    }

    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(
            self.store.create_organization(request.into_inner()).await?,
        ))
    }

    async fn create_source(
        &self,
        request: Request<pb::CreateSourceRequest>,
    ) -> Result<Response<pb::CreatedSource>, Status> {
        Ok(Response::new(
            self.store.create_source(request.into_inner()).await?,
        ))
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(
            self.store.update_organization(request.into_inner()).await?,
        ))
    }

    async fn create_destination(
        &self,
        request: Request<pb::CreateDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        Ok(Response::new(
            self.store.create_destination(request.into_inner()).await?,
        ))
    }

    async fn update_destination(
        &self,
        request: Request<pb::UpdateDestinationRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        Ok(Response::new(
            self.store.update_destination(request.into_inner()).await?,
        ))
    }

    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        Ok(Response::new(
            self.store.create_subscription(request.into_inner()).await?,
        ))
    }

    async fn set_destination_paused(
        &self,
        request: Request<pb::SetDestinationPausedRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.store
                .set_destination_paused(&request.id, request.paused)
                .await?,
        ))
    }

    async fn skip_head(
        &self,
        request: Request<pb::SkipHeadRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.store
                .skip_head(&request.id, &request.log_id, &request.retry_id)
                .await?,
        ))
    }

    async fn retry_head_now(
        &self,
        request: Request<pb::SkipHeadRequest>,
    ) -> Result<Response<pb::Destination>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.store
                .retry_head_now(&request.id, &request.log_id, &request.retry_id)
                .await?,
        ))
    }

    async fn update_source(
        &self,
        request: Request<pb::UpdateSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        Ok(Response::new(
            self.store.update_source(request.into_inner()).await?,
        ))
    }

    async fn rotate_client_secret(
        &self,
        request: Request<pb::RotateClientSecretRequest>,
    ) -> Result<Response<pb::RotatedSecret>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.store
                .rotate_client_secret(&request.source_id, request.overlap_secs)
                .await?,
        ))
    }

    async fn list_disabled_sources(
        &self,
        _request: Request<pb::ListDisabledSourcesRequest>,
    ) -> Result<Response<pb::DisabledSources>, Status> {
        Ok(Response::new(pb::DisabledSources {
            source_ids: self.store.disabled_sources().await?,
        }))
    }
}
