//! The budget a caller has left, as response headers: `X-RateLimit-Limit`
//! (requests per period), `-Remaining`, `-Reset` (seconds until the budget
//! is full again). Refusals also carry `Retry-After` (`error`).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use velocity_domain::rate_limit::Budget;

pub const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

pub fn set_budget_headers(headers: &mut HeaderMap, budget: &Budget) {
    headers.insert(LIMIT, HeaderValue::from(budget.limit));
    headers.insert(REMAINING, HeaderValue::from(budget.remaining));
    headers.insert(RESET, HeaderValue::from(budget.reset_secs));
}
