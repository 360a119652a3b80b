//! The gateway's client of its backends: their HTTP/2 connections ([`Pool`]: one backend, or
//! several that calls are spread over), the message compression on them, and how replies are
//! rendered.

use tonic::codec::CompressionEncoding;

use crate::net::Pool;

use super::response::RenderOptions;

/// The gateway's connection to the backend, shared by every request (cheap to clone).
#[derive(Clone)]
pub(crate) struct BackendClient {
    upstream: Pool,
    render: RenderOptions,
    compression: Option<CompressionEncoding>,
    /// Largest reply message of a streaming call (a unary reply is bounded by the connection).
    max_message_bytes: usize,
}

impl BackendClient {
    /// A client over `upstream`, rendering, compressing and bounding as `config` says.
    pub(crate) fn new(upstream: Pool, config: &super::GatewayConfig) -> Self {
        Self {
            upstream,
            render: config.render,
            compression: config.backend_compression,
            max_message_bytes: config.max_reply_bytes,
        }
    }

    /// The backends calls go to.
    pub(crate) fn upstream(&self) -> &Pool {
        &self.upstream
    }

    /// How replies are rendered.
    pub(crate) fn render_options(&self) -> RenderOptions {
        self.render
    }

    /// A tonic client on the connection. Its own limit on reply size is off: the connection's
    /// ([`crate::net::UpstreamOptions::max_reply_bytes`]) applies, and fails the call with a
    /// typed error instead of a status that would look like the backend's.
    ///
    /// With compression, requests are compressed and compressed replies are asked for
    /// (`grpc-accept-encoding`).
    pub(crate) fn grpc(&self) -> tonic::client::Grpc<Pool> {
        let grpc = tonic::client::Grpc::with_origin(self.upstream.clone(), self.upstream.origin())
            .max_decoding_message_size(usize::MAX);
        match self.compression {
            Some(encoding) => grpc.send_compressed(encoding).accept_compressed(encoding),
            None => grpc,
        }
    }

    /// A tonic client for a streaming call (its request must carry
    /// [`crate::net::StreamingCall`]): each reply message is bounded by the reply limit.
    pub(crate) fn grpc_streaming(&self) -> tonic::client::Grpc<Pool> {
        self.grpc()
            .max_decoding_message_size(self.max_message_bytes)
    }
}

/// Where a backend URL applies: `--backend URL` serves every service; `--backend NAME=URL`
/// serves the services whose fully-qualified name is `NAME` or starts with `NAME.` (a service
/// or a package).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// The service or package it serves; `None` for every service no other spec names.
    pub scope: Option<String>,
    /// Its URL (`http://` or `https://`).
    pub url: String,
}

impl std::str::FromStr for BackendSpec {
    type Err = String;

    /// `URL` or `NAME=URL`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.split_once('=') {
            // An `=` inside the URL (`?a=b`) is not a scope: the scope comes before `://`.
            Some((scope, url)) if !scope.contains("://") => {
                let scope = scope.trim();
                let valid = !scope.is_empty()
                    && scope.split('.').all(|part| {
                        !part.is_empty()
                            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    });
                if !valid {
                    return Err(format!(
                        "{scope:?} is not a service or package name (as in acme.shop.v1.Shop=http://host:port)"
                    ));
                }
                Ok(Self {
                    scope: Some(scope.to_string()),
                    url: url.trim().to_string(),
                })
            }
            _ => Ok(Self {
                scope: None,
                url: text.to_string(),
            }),
        }
    }
}

/// Every backend of the gateway: each scope's pool of connections, and which service goes
/// where. Fixed at startup.
pub(crate) struct Backends {
    /// The scope of each client (`None`: every service), longest scope first.
    scoped: Vec<(Option<String>, BackendClient)>,
}

impl Backends {
    /// The backends of `scoped` clients, at most one per scope.
    pub(crate) fn new(mut scoped: Vec<(Option<String>, BackendClient)>) -> Self {
        scoped.sort_by_key(|(scope, _)| std::cmp::Reverse(scope.as_ref().map_or(0, String::len)));
        Self { scoped }
    }

    /// Whether `scope` covers the service `service`.
    fn covers(scope: Option<&str>, service: &str) -> bool {
        match scope {
            None => true,
            Some(scope) => {
                service == scope
                    || (service.starts_with(scope) && service.as_bytes()[scope.len()] == b'.')
            }
        }
    }

    /// The backend of the service `service` (its full name); `None` when no backend serves it.
    pub(crate) fn of(&self, service: &str) -> Option<&BackendClient> {
        match self.scoped.as_slice() {
            [(None, only)] => Some(only),
            scoped => scoped
                .iter()
                .find(|(scope, _)| Self::covers(scope.as_deref(), service))
                .map(|(_, client)| client),
        }
    }

    /// The backend of a gRPC path (`/package.Service/Method`).
    pub(crate) fn of_path(&self, path: &str) -> Option<&BackendClient> {
        if let [(None, only)] = self.scoped.as_slice() {
            return Some(only);
        }
        let service = path.trim_start_matches('/').split('/').next()?;
        self.of(service)
    }

    /// Each backend, and whether it is the one that serves a given service.
    pub(crate) fn each(&self) -> impl Iterator<Item = &BackendClient> {
        self.scoped.iter().map(|(_, client)| client)
    }

    /// Whether `client` (one of [`Self::each`]) is the backend of `service`.
    pub(crate) fn serves(&self, client: &BackendClient, service: &str) -> bool {
        self.of(service).is_some_and(|c| std::ptr::eq(c, client))
    }

    /// Whether any backend is ready (for `/readyz`).
    pub(crate) async fn any_serving(&self) -> bool {
        for client in self.each() {
            if client.upstream().any_serving().await {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_spec_is_a_url_or_a_scoped_url() {
        let spec: BackendSpec = "http://a:1".parse().expect("url");
        assert_eq!(spec.scope, None);
        let spec: BackendSpec = "acme.shop.v1=http://b:2?x=y".parse().expect("scoped");
        assert_eq!(spec.scope.as_deref(), Some("acme.shop.v1"));
        assert_eq!(spec.url, "http://b:2?x=y");
        let spec: BackendSpec = "http://c:3/?x=y".parse().expect("= in the URL");
        assert_eq!(spec.scope, None);
        assert!("acme..v1=http://b:2".parse::<BackendSpec>().is_err());
        assert!("=http://b:2".parse::<BackendSpec>().is_err());
    }

    #[test]
    fn a_scope_covers_its_service_and_package_only() {
        assert!(Backends::covers(Some("acme.shop"), "acme.shop.v1.Shop"));
        assert!(Backends::covers(
            Some("acme.shop.v1.Shop"),
            "acme.shop.v1.Shop"
        ));
        assert!(!Backends::covers(
            Some("acme.shop"),
            "acme.shopping.v1.Shop"
        ));
        assert!(!Backends::covers(
            Some("acme.shop.v1.Shop"),
            "acme.shop.v1.ShopAdmin"
        ));
        assert!(Backends::covers(None, "anything.At.All"));
    }
}
