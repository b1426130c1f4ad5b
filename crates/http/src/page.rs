//! The HTML the consent flow shows: escaped by hand (a handful of fields),
//! with headers that forbid framing, caching and inline scripts.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use velocity_domain::Membership;
use velocity_domain::oauth::ValidatedAuthorization;

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1b1b1f}\
h1{font-size:1.4rem}ul{padding-left:1.2rem}li{margin:.3rem 0}code{font-size:.85em;color:#555}\
select,button{font-size:1rem;padding:.4rem .8rem;margin:.3rem .3rem .3rem 0}\
button.approve{background:#3451b2;color:#fff;border:0;border-radius:4px}.muted{color:#666;font-size:.9rem}";

pub fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Velocity</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    );
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::UNAUTHORIZED => "Sign in required",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
        _ => "This authorization request cannot be completed",
    };
    html(
        status,
        title,
        &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(message)),
    )
}

/// The consent page: which app asks (and who registered it), for what, in
/// which workspace: the picker's selected one is the one granted.
pub fn consent_page(
    request: &ValidatedAuthorization,
    registered_by: &str,
    workspaces: &[Membership],
    csrf_token: &str,
) -> Response {
    let app = escape(&request.app.name);
    let scopes: String = request
        .scopes
        .iter()
        .map(|s| {
            format!(
                "<li>{} <code>{}</code></li>",
                escape(s.description()),
                escape(s.as_str())
            )
        })
        .collect();
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        )
    };
    let mut fields = String::new();
    for (name, value) in [
        ("client_id", request.app.client_id.as_str()),
        ("redirect_uri", request.redirect_uri.as_str()),
        ("response_type", "code"),
        ("scope", &request.scopes.to_space_separated()),
        ("code_challenge", request.code_challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("csrf_token", csrf_token),
    ] {
        fields.push_str(&hidden(name, value));
    }
    if let Some(state) = &request.state {
        fields.push_str(&hidden("state", state));
    }
    let picker = if workspaces.is_empty() {
        "<p>You are not a member of any workspace, so there is nothing to grant.</p>".to_owned()
    } else {
        let options: String = workspaces
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "<option value=\"{}\"{}>{} ({}, you are {})</option>",
                    escape(&m.workspace.slug),
                    if i == 0 { " selected" } else { "" },
                    escape(&m.workspace.name),
                    escape(&m.workspace.slug),
                    m.role
                )
            })
            .collect();
        format!(
            "<p><label for=\"workspace\">Workspace being granted</label><br><select id=\"workspace\" name=\"workspace\" required>{options}</select></p>"
        )
    };
    let approve = if workspaces.is_empty() {
        ""
    } else {
        "<button class=\"approve\" type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>"
    };
    let body = format!(
        "<h1>{app} wants to access your Velocity account</h1>\
         <p class=\"muted\">{app} is registered by {}.</p>\
         <p>It is asking to:</p><ul>{scopes}</ul>\
         <form method=\"post\" action=\"/oauth/consent\">{fields}{picker}\
         {approve}<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>\
         <p class=\"muted\">Access is granted to the workspace selected above only. You will be sent back to <code>{}</code>. It never gets more than your role in that workspace allows.</p>",
        escape(registered_by),
        escape(&request.redirect_uri)
    );
    html(
        StatusCode::OK,
        &format!("Authorize {}", request.app.name),
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn pages_forbid_framing() {
        let page = error_page(StatusCode::BAD_REQUEST, "<script>");
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            page.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
}
