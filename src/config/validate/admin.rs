//! `admin:` rules: the listener's address and the token that protects it.

use super::{Problem, Validator};
use crate::admin::AdminToken;
use crate::config::locate::KeyPath;
use crate::config::raw::RawAdmin;
use std::net::SocketAddr;

impl Validator<'_> {
    /// The admin address and token, when configured and valid.
    pub(super) fn admin(
        &mut self,
        raw: Option<&RawAdmin>,
        path: &KeyPath,
    ) -> (Option<SocketAddr>, Option<AdminToken>) {
        let Some(raw) = raw else {
            return (None, None);
        };
        let bind = raw.bind.trim().parse::<SocketAddr>().ok();
        if bind.is_none() {
            self.err(path.key("bind"), Problem::BadBind(raw.bind.clone()));
        }
        let token = raw.token.as_deref().and_then(|rel| {
            let (full, bytes) = self.read(&path.key("token"), rel)?;
            let text = String::from_utf8(bytes).unwrap_or_default();
            let token = text.trim();
            // Short or non-printable tokens are refused: a bearer token is the admin
            // listener's only protection once it leaves loopback.
            if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                self.err(
                    path.key("token"),
                    Problem::BadFile {
                        path: full,
                        reason: "expected one token of at least 16 printable ASCII characters \
                                 without spaces (e.g. `openssl rand -hex 32`)"
                            .into(),
                    },
                );
                return None;
            }
            Some(AdminToken(token.to_owned()))
        });
        (bind, token)
    }
}
