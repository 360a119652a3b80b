//! (method, raw path) -> the route and its decoded path bindings, or why not: 404 when no
//! template matches the path, 405 (with the methods that would) when some do for other methods.
//! A route with a verb wins over one without (`/images/{id}:verb` vs `/images/{id}`), then
//! declaration order decides.

use axum::http::Method;

use super::error::GatewayError;
use super::routes::{Route, RouteTable};
use super::template::RequestPath;

/// A matched route and its variable values, in the template's variable order.
#[derive(Debug)]
pub struct Match<'a> {
    /// The route.
    pub route: &'a Route,
    /// Decoded values of the template's variables.
    pub bindings: Vec<String>,
    /// The route's place in the table.
    pub(crate) index: usize,
}

/// A route table, and the routes of each HTTP method in the order they are tried: those with a
/// verb first, each group in declaration order.
pub struct Matcher {
    table: RouteTable,
    /// Indices into the table's routes.
    by_method: Vec<(Method, Vec<usize>)>,
}

impl Matcher {
    /// The matcher of `table`.
    pub fn new(table: RouteTable) -> Self {
        let routes = table.routes();
        let mut by_method: Vec<(Method, Vec<usize>)> = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            match by_method.iter_mut().find(|(m, _)| m == route.method()) {
                Some((_, list)) => list.push(i),
                None => by_method.push((route.method().clone(), vec![i])),
            }
        }
        for (_, list) in &mut by_method {
            // Stable: declaration order stays within each group.
            list.sort_by_key(|i| routes[*i].template().verb.is_none());
        }
        Self { table, by_method }
    }

    /// The route table.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The route for a request, and its path variables' values.
    pub fn find(&self, method: &Method, raw_path: &str) -> Result<Match<'_>, GatewayError> {
        // HEAD is GET without the body (RFC 9110 §9.3.2): every GET route answers it.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let routes = self.table.routes();
        let Some(path) = RequestPath::new(raw_path) else {
            return Err(GatewayError::NotFound);
        };
        let mut bad_escape = None;
        // The routes of this method first: the common case stops at the first that matches.
        if let Some((_, list)) = self.by_method.iter().find(|(m, _)| m == method) {
            for &i in list {
                let route = &routes[i];
                match route.template().matches(&path) {
                    Ok(Some(bindings)) => {
                        return Ok(Match {
                            route,
                            bindings,
                            index: i,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        bad_escape.get_or_insert(e);
                    }
                }
            }
        }
        // No route of this method: 400 for a bad escape, else 405 with the methods that
        // would match, else 404.
        let mut allow: Vec<Method> = Vec::new();
        for route in routes.iter().filter(|r| r.method() != method) {
            match route.template().matches(&path) {
                Ok(Some(_)) => {
                    if !allow.contains(route.method()) {
                        allow.push(route.method().clone());
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
        if let Some(get) = allow.iter().position(|m| m == Method::GET) {
            allow.insert(get + 1, Method::HEAD);
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

    fn rpc_of<'a>(m: &'a Match<'_>) -> &'a str {
        m.route.rpc().path()
    }

    fn table() -> Matcher {
        Matcher::new(RouteTable::compiled().expect("the proto routes check out"))
    }

    #[test]
    fn resolves_the_image_routes() {
        let t = table();
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
        let t = table();
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
                assert_eq!(
                    allow,
                    [Method::GET, Method::HEAD, Method::PATCH, Method::DELETE]
                )
            }
            other => panic!("{other:?}"),
        }
        match t.find(&Method::DELETE, "/compute/v1/images") {
            Err(GatewayError::MethodNotAllowed { allow }) => {
                assert_eq!(allow, [Method::GET, Method::HEAD, Method::POST])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.find(&Method::GET, "/compute/v1/images/%zz"),
            Err(GatewayError::BadRequest(_))
        ));
    }
}
