//! The HTTP API: one filter per endpoint, each given only the state it uses, combined in
//! [`api`].

mod assets;
mod bearer;
mod health;
mod login;
mod metrics;
mod model_info;
mod openapi;
mod predict;
mod request_span;
mod v2;
mod v2_docs;
mod web;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use warp::http::header::{HeaderValue, ALLOW};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

pub use login::Login;
pub use predict::Predictor;

use crate::auth::Auth;
use crate::error::{handle_rejection, handle_rejection_as, ErrorShape};
use crate::repository::Repository;

/// What the routes serve, built once by start-up.
pub struct Services {
    /// Users and tokens, for `/login` and the bearer filter.
    pub auth: Arc<Auth>,
    /// `/login`'s password threads, throttle and body limits.
    pub login: Login,
    /// `/predict`'s model, limits and pools, shared by the inference protocol's routes.
    pub predictor: Arc<Predictor>,
    /// The loaded model versions.
    pub repository: Arc<Repository>,
    /// Base URL of Jaeger's web UI, for links from the page.
    pub jaeger_ui_url: String,
}

/// Every route, with every rejection turned into the JSON error shape.
pub fn api(
    services: Services,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let Services {
        auth,
        login,
        predictor,
        repository,
        jaeger_ui_url,
    } = services;
    let routes = health::route()
        .or(model_info::route(Arc::clone(&predictor)))
        .or(metrics::route())
        .or(openapi::route())
        .or(login::route(login, Arc::clone(&auth)))
        .or(v2::routes(
            Arc::clone(&predictor),
            Arc::clone(&repository),
            Arc::clone(&auth),
        ))
        .or(predict::route(predictor, bearer::with_bearer(auth)))
        .or(web::route(&jaeger_ui_url));
    let handled = request_span::record_client()
        .and(routes)
        .recover(handle_rejection);
    warp::any()
        .map(Instant::now)
        .and(warp::method())
        .and(handled)
        .map(|started: Instant, method: Method, reply| {
            let res = Reply::into_response(reply);
            let route = res.extensions().get::<Route>().map(|r| r.template);
            crate::metrics::record_request(&method, route, res.status(), started.elapsed());
            request_span::finish(res, &method, route.is_some())
        })
        .with(warp::trace(request_span::start))
}

/// A route as the API documents it: its templated path and the methods it answers.
#[derive(Clone, Copy, Debug)]
struct Route {
    template: &'static str,
    allow: &'static str,
}

/// The filter for one route: `path` selects it; everything after is this route's answer.
///
/// Once the path matches, the route is recorded on the request span (`http.route` and its
/// name), and every rejection after it (wrong method, bad header, a handler's error) becomes
/// the JSON error here, a 405 carrying this route's `Allow` (RFC 9110 §15.5.6). The answer is
/// tagged with the route for the request metrics.
fn route<P, R>(
    template: &'static str,
    allow: &'static str,
    path: P,
    rest: R,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static
where
    P: Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static,
    R: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    route_as(ErrorShape::Api, template, allow, path, rest)
}

/// [`route`], with errors in the given JSON shape.
fn route_as<P, R>(
    shape: ErrorShape,
    template: &'static str,
    allow: &'static str,
    path: P,
    rest: R,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static
where
    P: Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static,
    R: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    let route = Route { template, allow };
    path.and(request_span::at(template))
        .and(rest.recover(move |r| answer(r, route, shape)).unify())
        .map(move |mut res: Response| {
            res.extensions_mut().insert(route);
            res
        })
}

/// The error response for a rejection past a route's path. A path that matched only in part
/// (none of ours does) is passed on, so it can still be another route's.
async fn answer(
    rejection: Rejection,
    route: Route,
    shape: ErrorShape,
) -> Result<Response, Rejection> {
    if rejection.is_not_found() {
        return Err(rejection);
    }
    let Ok(mut res) = handle_rejection_as(rejection, shape).await;
    if res.status() == StatusCode::METHOD_NOT_ALLOWED {
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(route.allow));
    }
    Ok(res)
}
