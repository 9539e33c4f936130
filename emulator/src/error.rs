//! Google's error responses, in the exact JSON shape of the Calendar API
//! (`{"error":{"errors":[{domain,reason,message,locationType?,location?}],
//! "code","message"}}`).

use serde_json::{json, Value};

/// An error answer of the emulated API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub domain: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// `(locationType, location)`, e.g. `("parameter", "syncToken")`.
    pub location: Option<(&'static str, String)>,
}

impl ApiError {
    pub fn new(
        status: u16,
        domain: &'static str,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            domain,
            reason,
            message: message.into(),
            location: None,
        }
    }

    pub fn at(mut self, location_type: &'static str, location: impl Into<String>) -> Self {
        self.location = Some((location_type, location.into()));
        self
    }

    /// 400 global/invalid naming the parameter.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        ApiError::new(400, "global", "invalid", message).at("parameter", param)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "global", "badRequest", message)
    }

    pub fn required(field: &str) -> Self {
        ApiError::new(400, "global", "required", "Required").at("parameter", field)
    }

    pub fn not_found() -> Self {
        ApiError::new(404, "global", "notFound", "Not Found")
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "global", "authError", "Invalid Credentials")
            .at("header", "Authorization")
    }

    pub fn insufficient_permissions() -> Self {
        ApiError::new(
            403,
            "global",
            "insufficientPermissions",
            "Insufficient Permission",
        )
    }

    pub fn full_sync_required() -> Self {
        ApiError::new(
            410,
            "calendar",
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
        )
        .at("parameter", "syncToken")
    }

    pub fn updated_min_too_long_ago() -> Self {
        ApiError::new(
            410,
            "calendar",
            "updatedMinTooLongAgo",
            "The requested minimum modification time lies too far in the past.",
        )
        .at("parameter", "updatedMin")
    }

    pub fn deleted() -> Self {
        ApiError::new(410, "global", "deleted", "Resource has been deleted")
    }

    pub fn duplicate() -> Self {
        ApiError::new(
            409,
            "global",
            "duplicate",
            "The requested identifier already exists.",
        )
    }

    pub fn condition_not_met() -> Self {
        ApiError::new(412, "global", "conditionNotMet", "Precondition Failed")
            .at("header", "If-Match")
    }

    pub fn user_rate_limit() -> Self {
        ApiError::new(
            403,
            "usageLimits",
            "userRateLimitExceeded",
            "User Rate Limit Exceeded",
        )
    }

    pub fn rate_limit(status: u16) -> Self {
        ApiError::new(
            status,
            "usageLimits",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        )
    }

    pub fn backend(status: u16) -> Self {
        let message = if status == 503 {
            "Service Unavailable"
        } else {
            "Backend Error"
        };
        ApiError::new(status, "global", "backendError", message)
    }

    /// The response body.
    pub fn body(&self) -> Value {
        let mut item =
            json!({ "domain": self.domain, "reason": self.reason, "message": self.message });
        if let Some((kind, loc)) = &self.location {
            item["locationType"] = json!(kind);
            item["location"] = json!(loc);
        }
        json!({ "error": { "errors": [item], "code": self.status, "message": self.message } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_sync_required_is_googles_exact_body() {
        let want: Value = serde_json::from_str(
            r#"{"error":{"errors":[{"domain":"calendar","reason":"fullSyncRequired","message":"Sync token is no longer valid, a full sync is required.","locationType":"parameter","location":"syncToken"}],"code":410,"message":"Sync token is no longer valid, a full sync is required."}}"#,
        )
        .unwrap();
        assert_eq!(ApiError::full_sync_required().body(), want);
    }
}
