//! The `Enroll` rpc, and the statuses identity failures map to.

use std::sync::Arc;

use fleetban_proto::pb::enroll_service_server::EnrollService;
use fleetban_proto::pb::{EnrollRequest, EnrollResponse};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::service::identity::{AuthError, Identities};
use crate::store::Refusal;

pub use fleetban_proto::pb::enroll_service_server::EnrollServiceServer;

/// Largest CSR accepted, in bytes.
const CSR_MAX: usize = 16 * 1024;

pub struct EnrollEndpoint {
    identities: Arc<Identities>,
}

impl EnrollEndpoint {
    pub fn new(identities: Arc<Identities>) -> Self {
        EnrollEndpoint { identities }
    }
}

#[tonic::async_trait]
impl EnrollService for EnrollEndpoint {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let peer = request.remote_addr();
        let r = request.into_inner();
        if r.csr_pem.len() > CSR_MAX {
            return Err(Status::invalid_argument(format!(
                "certificate signing request larger than {CSR_MAX} bytes"
            )));
        }
        match self
            .identities
            .enroll(&r.token, &r.agent_id, &r.hostname, &r.csr_pem)
            .await
        {
            Ok(e) => Ok(Response::new(EnrollResponse {
                agent_id: e.agent_id,
                certificate_pem: e.certificate_pem,
                ca_pem: e.ca_pem,
                group: e.group.unwrap_or_default(),
            })),
            Err(e) => {
                info!(agent = %r.agent_id, peer = ?peer, error = %e, "enrollment refused");
                Err(auth_status(e))
            }
        }
    }
}

/// The status an identity failure is answered with.
pub fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Invalid(m) => Status::invalid_argument(m),
        AuthError::Refused(r @ Refusal::AlreadyEnrolled(_)) => {
            Status::already_exists(r.to_string())
        }
        AuthError::Refused(r) => Status::permission_denied(r.to_string()),
        e @ (AuthError::NoCertificate | AuthError::UnknownCertificate) => {
            Status::unauthenticated(e.to_string())
        }
        e @ (AuthError::Revoked(_) | AuthError::WrongAgent { .. }) => {
            Status::permission_denied(e.to_string())
        }
        e @ AuthError::NotEnrolled(_) => Status::not_found(e.to_string()),
        e @ AuthError::Plaintext => Status::failed_precondition(e.to_string()),
        AuthError::Store(e) => {
            warn!(error = %e, "store error");
            Status::unavailable("the server cannot reach its database; retry later")
        }
        AuthError::Identity(e) => {
            warn!(error = %e, "certificate error");
            Status::internal("the server cannot issue certificates; see its log")
        }
    }
}
