//! [`HealthState`]: the standard gRPC health service (`grpc.health.v1.Health`), with the
//! serving status of the server as a whole (`""`) and of each proto service it serves.
//!
//! A [`crate::Service`] reports SERVING once it has started and NOT_SERVING from the moment
//! it starts to drain, so Kubernetes' `grpc:` probes, `grpc_health_probe` and load balancers
//! stop sending before the calls in flight are finished. Check on a service nobody
//! registered answers NOT_FOUND; Watch on one answers SERVICE_UNKNOWN and stays open until
//! the service becomes known, as the proto's own comments ask.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The serving status the health service reports, per proto service and overall (`""`).
/// Cheap to clone; every clone reports into the same service.
#[derive(Debug, Clone, Default)]
pub struct HealthState {
    statuses: Arc<Mutex<HashMap<String, watch::Sender<ServingStatus>>>>,
}

impl HealthState {
    /// Reports `service` (a fully qualified proto service name, or `""` for the whole
    /// server) as serving or not.
    pub fn set_serving(&self, service: &str, serving: bool) {
        let status = match serving {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        self.set(service, status);
    }

    /// Reports every service known so far, and the server, as serving or not.
    pub fn set_all_serving(&self, serving: bool) {
        let known: Vec<String> = self.lock().keys().cloned().collect();
        self.set_serving("", serving);
        for service in known.iter().filter(|s| !s.is_empty()) {
            if self.status(service) != Some(ServingStatus::ServiceUnknown) {
                self.set_serving(service, serving);
            }
        }
    }

    /// Ends every Watch stream (a stopping server must not wait for them).
    pub(crate) fn close(&self) {
        self.lock().clear();
    }

    /// The tonic service answering `grpc.health.v1.Health`.
    pub(crate) fn service(&self) -> HealthServer<Self> {
        HealthServer::new(self.clone())
    }

    fn set(&self, service: &str, status: ServingStatus) {
        let mut statuses = self.lock();
        match statuses.get(service) {
            // Watchers hear of changes only, not of the same status again.
            Some(sender) => {
                sender.send_if_modified(|now| std::mem::replace(now, status) != status);
            }
            None => {
                statuses.insert(service.to_owned(), watch::channel(status).0);
            }
        }
    }

    fn status(&self, service: &str) -> Option<ServingStatus> {
        self.lock().get(service).map(|sender| *sender.borrow())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<ServingStatus>>> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

/// A Watch stream: the status now, then each change, until the server stops.
type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthState {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        match self.status(service) {
            Some(ServingStatus::ServiceUnknown) | None => Err(Status::not_found(format!(
                "no health is reported for service {service:?}"
            ))),
            Some(status) => Ok(Response::new(answer(status))),
        }
    }

    type WatchStream = Statuses;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let receiver = {
            let mut statuses = self.lock();
            let sender = statuses
                .entry(service)
                .or_insert_with(|| watch::channel(ServingStatus::ServiceUnknown).0);
            sender.subscribe()
        };
        let changes =
            futures_util::stream::unfold((receiver, true), |(mut receiver, first)| async move {
                if !first && receiver.changed().await.is_err() {
                    return None;
                }
                let status = *receiver.borrow_and_update();
                Some((Ok(answer(status)), (receiver, false)))
            });
        Ok(Response::new(Box::pin(changes)))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    fn asking(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.into(),
        })
    }

    #[tokio::test]
    async fn check_and_watch_follow_the_proto_s_rules() {
        let health = HealthState::default();
        health.set_serving("", true);
        health.set_serving("user.User", true);
        let check = |service: &'static str| {
            let health = health.clone();
            async move {
                health
                    .check(asking(service))
                    .await
                    .map(|r| r.into_inner().status)
            }
        };
        assert_eq!(check("").await.unwrap(), ServingStatus::Serving as i32);
        assert_eq!(
            check("nope.Nope").await.unwrap_err().code(),
            tonic::Code::NotFound
        );

        let mut unknown = health
            .watch(asking("late.Late"))
            .await
            .unwrap()
            .into_inner();
        let first = unknown.next().await.unwrap().unwrap();
        assert_eq!(
            first.status,
            ServingStatus::ServiceUnknown as i32,
            "stays open"
        );
        assert_eq!(
            check("late.Late").await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        health.set_serving("late.Late", true);
        let known = unknown.next().await.unwrap().unwrap();
        assert_eq!(known.status, ServingStatus::Serving as i32);

        let mut user = health
            .watch(asking("user.User"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            user.next().await.unwrap().unwrap().status,
            ServingStatus::Serving as i32
        );
        health.set_all_serving(false);
        assert_eq!(
            user.next().await.unwrap().unwrap().status,
            ServingStatus::NotServing as i32
        );
        assert_eq!(check("").await.unwrap(), ServingStatus::NotServing as i32);
        health.close();
        assert!(
            user.next().await.is_none(),
            "a stopping server ends the watches"
        );
    }
}
