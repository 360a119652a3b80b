//! `yandex.cloud.endpoint.ApiEndpointService`: endpoint discovery, which the official SDKs call
//! before anything else. Every service id they ask for is served by this one process, so each
//! maps to the advertised address.

use tonic::{Request, Response, Status};

use super::state::Backend;
use crate::pb::yandex::cloud::endpoint::api_endpoint_service_server::ApiEndpointService;
use crate::pb::yandex::cloud::endpoint::{
    ApiEndpoint, GetApiEndpointRequest, ListApiEndpointsRequest, ListApiEndpointsResponse,
};

/// The ids the SDKs look up: compute and operation are served here; iam is listed because the
/// Python SDK resolves it at start (its token calls are not served).
const IDS: [&str; 3] = ["compute", "operation", "iam"];

/// The ApiEndpointService implementation.
pub(super) struct Endpoints(pub(super) Backend);

impl Endpoints {
    fn endpoint(&self, id: &str) -> ApiEndpoint {
        ApiEndpoint {
            id: id.to_string(),
            address: self.0.config().advertise_address.clone(),
        }
    }
}

#[tonic::async_trait]
impl ApiEndpointService for Endpoints {
    async fn get(
        &self,
        req: Request<GetApiEndpointRequest>,
    ) -> Result<Response<ApiEndpoint>, Status> {
        let id = req.into_inner().api_endpoint_id;
        if IDS.contains(&id.as_str()) {
            Ok(Response::new(self.endpoint(&id)))
        } else {
            Err(Status::not_found(format!("api endpoint {id} not found")))
        }
    }

    async fn list(
        &self,
        _: Request<ListApiEndpointsRequest>,
    ) -> Result<Response<ListApiEndpointsResponse>, Status> {
        Ok(Response::new(ListApiEndpointsResponse {
            endpoints: IDS.iter().map(|id| self.endpoint(id)).collect(),
            next_page_token: String::new(),
        }))
    }
}
