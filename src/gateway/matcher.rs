//! (method, raw path) -> the route and its decoded path bindings, or why not: 404 when no
//! template matches the path, 405 (with the methods that would) when some do for other methods.
//! A route with a verb wins over one without (`/images/{id}:verb` vs `/images/{id}`), then
//! declaration order decides.

use axum::http::Method;

use super::error::GatewayError;
use super::routes::{Route, RouteTable};

/// A matched route and its variable values, in the template's variable order.
#[derive(Debug)]
pub struct Match<'a> {
    /// The route.
    pub route: &'a Route,
    /// Decoded values of the template's variables.
    pub bindings: Vec<String>,
}

impl RouteTable {
    /// Finds the route for a request.
    pub fn find(&self, method: &Method, raw_path: &str) -> Result<Match<'_>, GatewayError> {
        let mut bad_escape = None;
        // The routes of this method first: the common case stops here.
        let mut best: Option<Match<'_>> = None;
        for route in self.routes.iter().filter(|r| r.method == *method) {
            if best
                .as_ref()
                .is_some_and(|b| b.route.template.verb.is_some() || route.template.verb.is_none())
            {
                continue; // it could not win
            }
            match route.template.match_path(raw_path) {
                Ok(Some(bindings)) => best = Some(Match { route, bindings }),
                Ok(None) => {}
                Err(e) => {
                    bad_escape.get_or_insert(e);
                }
            }
        }
        if let Some(m) = best {
            return Ok(m);
        }
        // No route of this method: 400 for a bad escape, else 405 with the methods that
        // would match, else 404.
        let mut allow: Vec<Method> = Vec::new();
        for route in self.routes.iter().filter(|r| r.method != *method) {
            match route.template.match_path(raw_path) {
                Ok(Some(_)) => {
                    if !allow.contains(&route.method) {
                        allow.push(route.method.clone());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    bad_escape.get_or_insert(e);
                }
            }
        }
        if let Some(e) = bad_escape {
            return Err(GatewayError::bad_request(e));
        }
        if allow.is_empty() {
            Err(GatewayError::NotFound)
        } else {
            Err(GatewayError::MethodNotAllowed { allow })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc_of(m: &Match<'_>) -> &'static str {
        m.route.rpc().path
    }

    #[test]
    fn resolves_the_image_routes() {
        let t = RouteTable::new().expect("the proto routes check out");
        let cases = [
            (
                "GET",
                "/compute/v1/images/fd8abc",
                "/yandex.cloud.compute.v1.ImageService/Get",
                vec!["fd8abc"],
            ),
            (
                "PATCH",
                "/compute/v1/images/fd8abc",
                "/yandex.cloud.compute.v1.ImageService/Update",
                vec!["fd8abc"],
            ),
            (
                "DELETE",
                "/compute/v1/images/fd8abc",
                "/yandex.cloud.compute.v1.ImageService/Delete",
                vec!["fd8abc"],
            ),
            (
                "GET",
                "/compute/v1/images",
                "/yandex.cloud.compute.v1.ImageService/List",
                vec![],
            ),
            (
                "POST",
                "/compute/v1/images",
                "/yandex.cloud.compute.v1.ImageService/Create",
                vec![],
            ),
            (
                "GET",
                "/compute/v1/images:latestByFamily",
                "/yandex.cloud.compute.v1.ImageService/GetLatestByFamily",
                vec![],
            ),
            (
                "GET",
                "/compute/v1/images/fd8abc/operations",
                "/yandex.cloud.compute.v1.ImageService/ListOperations",
                vec!["fd8abc"],
            ),
            (
                "GET",
                "/compute/v1/images/fd8:listAccessBindings",
                "/yandex.cloud.compute.v1.ImageService/ListAccessBindings",
                vec!["fd8"],
            ),
            (
                "POST",
                "/compute/v1/images/fd8:setAccessBindings",
                "/yandex.cloud.compute.v1.ImageService/SetAccessBindings",
                vec!["fd8"],
            ),
            (
                "POST",
                "/compute/v1/images/fd8:updateAccessBindings",
                "/yandex.cloud.compute.v1.ImageService/UpdateAccessBindings",
                vec!["fd8"],
            ),
            (
                "GET",
                "/operations/epd1",
                "/yandex.cloud.operation.OperationService/Get",
                vec!["epd1"],
            ),
            (
                "GET",
                "/operations/epd1:cancel",
                "/yandex.cloud.operation.OperationService/Cancel",
                vec!["epd1"],
            ),
            (
                "POST",
                "/operations/epd1:cancel",
                "/yandex.cloud.operation.OperationService/Cancel",
                vec!["epd1"],
            ),
            (
                "GET",
                "/compute/v1/images/a%3Ab",
                "/yandex.cloud.compute.v1.ImageService/Get",
                vec!["a:b"],
            ),
        ];
        for (method, path, rpc, bindings) in cases {
            let m = t
                .find(
                    &Method::from_bytes(method.as_bytes()).expect("method"),
                    path,
                )
                .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
            assert_eq!(rpc_of(&m), rpc, "{method} {path}");
            assert_eq!(m.bindings, bindings, "{method} {path}");
        }
    }

    #[test]
    fn not_found_and_method_not_allowed() {
        let t = RouteTable::new().expect("the proto routes check out");
        for path in [
            "/",
            "/compute",
            "/compute/v1/images/a/b",
            "/compute/v1/disks",
            "/compute/v1/images:nope",
        ] {
            assert!(
                matches!(t.find(&Method::GET, path), Err(GatewayError::NotFound)),
                "{path}"
            );
        }
        match t.find(&Method::PUT, "/compute/v1/images/fd8") {
            Err(GatewayError::MethodNotAllowed { allow }) => {
                assert_eq!(allow, [Method::GET, Method::PATCH, Method::DELETE])
            }
            other => panic!("{other:?}"),
        }
        match t.find(&Method::DELETE, "/compute/v1/images") {
            Err(GatewayError::MethodNotAllowed { allow }) => {
                assert_eq!(allow, [Method::GET, Method::POST])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.find(&Method::GET, "/compute/v1/images/%zz"),
            Err(GatewayError::BadRequest(_))
        ));
    }
}
