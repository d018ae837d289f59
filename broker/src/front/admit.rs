//! The front door's admission decision, without I/O: given what a CONNECT
//! asked for and what the login checks found, [`admit`] says whether the
//! client gets in and, if not, which [`Refusal`] (and so which CONNACK
//! return code, MQTT 3.1.1 section 3.2.2.3) it gets.
//!
//! The connection task does the I/O around it: it reads the CONNECT, asks
//! the [`LoginThrottle`](crate::limits::LoginThrottle) and the
//! [`CredentialStore`](crate::CredentialStore) (only when the throttle lets
//! the attempt through, so a throttled address costs no password check),
//! calls [`admit`], and answers a refusal with its CONNACK.

use std::fmt;

use crate::acl::Acl;
use crate::credentials::{AuthOutcome, RefuseReason, Role};
use crate::metrics::{self, AclAction};

/// A CONNECT, and what the front door found out about its login.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    /// The client id, as sent (possibly empty, MQTT-3.1.3-6).
    pub client_id: &'a str,
    /// The user name and the verdict on it; `None` when the CONNECT has no
    /// user name (MQTT-3.1.2-19).
    pub login: Option<(&'a str, LoginCheck)>,
    /// The last will topic, as sent (not checked to be UTF-8 yet); `None`
    /// without a last will.
    pub will_topic: Option<&'a [u8]>,
}

/// What the login checks found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginCheck {
    /// Too many failed logins from the address or for the user: the
    /// password was not checked.
    Throttled,
    /// Checked against the credentials file.
    Checked {
        /// The answer of [`CredentialStore::verify`](crate::CredentialStore::verify).
        outcome: AuthOutcome,
        /// The user's [`fingerprint`](crate::CredentialStore::fingerprint),
        /// taken before the check; `None` when the file did not list the
        /// user then.
        fingerprint: Option<u64>,
    },
}

/// A login the front door lets through to rumqttd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted<'a> {
    /// The user name of the [`Attempt`].
    pub username: &'a str,
    /// The user's role.
    pub role: Role,
    /// The version of the user's credentials the client logged in with; a
    /// live session whose user's fingerprint changes is revoked.
    pub fingerprint: u64,
}

/// Why the front door answers a CONNECT with a refusing CONNACK. [`admit`]
/// decides those about the login; the connection task adds
/// [`Refusal::ProtocolVersion`] (before there is a CONNECT to decide on)
/// and [`Refusal::Upstream`] (after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A protocol level other than 4, MQTT 3.1.1 (MQTT-3.1.2-2).
    ProtocolVersion,
    /// No user name and password.
    NoLogin,
    /// Too many failed logins from the client's address or for the user.
    Throttled,
    /// The credentials file refused the login: unknown user, wrong
    /// password, or a client id not bound to the user.
    Credentials(RefuseReason),
    /// The ACL does not let the user publish to its last will topic, or the
    /// topic is not UTF-8.
    Will {
        /// The topic, invalid UTF-8 replaced.
        topic: String,
    },
    /// The user was added to the credentials file while its login was
    /// being checked: the client should simply log in again.
    Reloaded,
    /// rumqttd's internal listener could not be reached in time.
    Upstream,
}

/// What a refusal counts in [`BrokerMetrics`](crate::BrokerMetrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Counted {
    /// `kiosk_broker_refused_total{reason}`.
    Refused(metrics::Refusal),
    /// `kiosk_broker_acl_denied_total{action}`.
    AclDenied(AclAction),
}

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Counted::Refused(reason) => f.write_str(reason.as_str()),
            Counted::AclDenied(action) => write!(f, "acl_denied:{action}"),
        }
    }
}

impl Refusal {
    /// The CONNACK return code (MQTT 3.1.1 section 3.2.2.3, table 3.1):
    /// 0x01 unacceptable protocol version, 0x02 identifier rejected, 0x03
    /// server unavailable (try again), 0x04 bad user name or password, 0x05
    /// not authorized.
    pub(crate) fn return_code(&self) -> u8 {
        match self {
            Refusal::ProtocolVersion => 0x01,
            Refusal::Credentials(
                RefuseReason::ClientIdMismatch | RefuseReason::ReservedClientId,
            ) => 0x02,
            Refusal::Reloaded | Refusal::Upstream => 0x03,
            Refusal::Credentials(RefuseReason::UnknownUser | RefuseReason::WrongPassword) => 0x04,
            Refusal::NoLogin | Refusal::Throttled | Refusal::Will { .. } => 0x05,
        }
    }

    /// The counter the refusal adds to. A forbidden last will counts as an
    /// ACL denial, like a forbidden PUBLISH, not as a refused login.
    pub(crate) fn counted(&self) -> Counted {
        let refused = match self {
            Refusal::Will { .. } => return Counted::AclDenied(AclAction::Will),
            Refusal::ProtocolVersion => metrics::Refusal::Protocol,
            Refusal::Throttled => metrics::Refusal::LoginThrottled,
            Refusal::Credentials(
                RefuseReason::ClientIdMismatch | RefuseReason::ReservedClientId,
            ) => metrics::Refusal::ClientId,
            Refusal::NoLogin
            | Refusal::Reloaded
            | Refusal::Credentials(RefuseReason::UnknownUser | RefuseReason::WrongPassword) => {
                metrics::Refusal::LoginFailed
            }
            Refusal::Upstream => metrics::Refusal::Upstream,
        };
        Counted::Refused(refused)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ProtocolVersion => f.write_str("not MQTT 3.1.1"),
            Refusal::NoLogin => f.write_str("no user name and password"),
            Refusal::Throttled => f.write_str("too many failed logins"),
            Refusal::Credentials(reason) => write!(f, "login refused: {reason}"),
            Refusal::Will { topic } => write!(f, "ACL denied: last will topic {topic:?}"),
            Refusal::Reloaded => f.write_str("credentials reloaded during the login"),
            Refusal::Upstream => f.write_str("rumqttd's internal listener unreachable"),
        }
    }
}

/// Decides on a login, in this order: a user name is required, the
/// throttle and the credentials must let it through, the ACL must let the
/// user publish its last will, and the user must have been in the file
/// when its fingerprint was taken. Pure: reads `acl`, nothing else.
///
/// # Errors
/// The first [`Refusal`] that applies.
pub(crate) fn admit<'a>(attempt: &Attempt<'a>, acl: &Acl) -> Result<Admitted<'a>, Refusal> {
    let Some((username, check)) = attempt.login else {
        return Err(Refusal::NoLogin);
    };
    let (role, fingerprint) = match check {
        LoginCheck::Throttled => return Err(Refusal::Throttled),
        LoginCheck::Checked {
            outcome: AuthOutcome::Refused { reason },
            ..
        } => return Err(Refusal::Credentials(reason)),
        LoginCheck::Checked {
            outcome: AuthOutcome::Accepted { role },
            fingerprint,
        } => (role, fingerprint),
    };
    if let Some(topic) = attempt.will_topic {
        let acl = acl.for_client(username, attempt.client_id, Some(role));
        if !std::str::from_utf8(topic).is_ok_and(|t| acl.may_publish(t)) {
            let topic = String::from_utf8_lossy(topic).into_owned();
            return Err(Refusal::Will { topic });
        }
    }
    // Added between the fingerprint and the check: it may log in again.
    let fingerprint = fingerprint.ok_or(Refusal::Reloaded)?;
    Ok(Admitted {
        username,
        role,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use rumqttd::protocol::v4::V4;
    use rumqttd::protocol::{ConnAck, ConnectReturnCode, Packet, Protocol};

    use super::*;

    const ACCEPTED: LoginCheck = LoginCheck::Checked {
        outcome: AuthOutcome::Accepted { role: Role::Kiosk },
        fingerprint: Some(7),
    };

    const fn refused(reason: RefuseReason) -> LoginCheck {
        LoginCheck::Checked {
            outcome: AuthOutcome::Refused { reason },
            fingerprint: Some(7),
        }
    }

    /// One login of kiosk `k1` (client id `client_id`) under the default
    /// policy.
    struct Case {
        name: &'static str,
        client_id: &'static str,
        login: Option<LoginCheck>,
        will: Option<&'static [u8]>,
        want: Result<Admitted<'static>, Refusal>,
        /// The CONNACK return code of a refusal.
        code: Option<u8>,
        /// The counter of a refusal.
        counted: Option<Counted>,
    }

    const ADMITTED: Result<Admitted<'static>, Refusal> = Ok(Admitted {
        username: "k1",
        role: Role::Kiosk,
        fingerprint: 7,
    });
    const LOGIN_FAILED: Option<Counted> = Some(Counted::Refused(metrics::Refusal::LoginFailed));

    fn cases() -> Vec<Case> {
        let will = |topic: &str| {
            Err(Refusal::Will {
                topic: topic.into(),
            })
        };
        #[rustfmt::skip]
        let cases = vec![
            Case { name: "accepted", client_id: "k1", login: Some(ACCEPTED), will: None, want: ADMITTED, code: None, counted: None },
            Case { name: "accepted with its own status as last will", client_id: "k1", login: Some(ACCEPTED), will: Some(b"kiosk/k1/status"), want: ADMITTED, code: None, counted: None },
            Case { name: "no login", client_id: "k1", login: None, will: None, want: Err(Refusal::NoLogin), code: Some(0x05), counted: LOGIN_FAILED },
            Case { name: "no login, whatever the will", client_id: "k1", login: None, will: Some(b"#"), want: Err(Refusal::NoLogin), code: Some(0x05), counted: LOGIN_FAILED },
            Case { name: "throttled", client_id: "k1", login: Some(LoginCheck::Throttled), will: None, want: Err(Refusal::Throttled), code: Some(0x05), counted: Some(Counted::Refused(metrics::Refusal::LoginThrottled)) },
            Case { name: "unknown user", client_id: "k1", login: Some(refused(RefuseReason::UnknownUser)), will: None, want: Err(Refusal::Credentials(RefuseReason::UnknownUser)), code: Some(0x04), counted: LOGIN_FAILED },
            Case { name: "wrong password", client_id: "k1", login: Some(refused(RefuseReason::WrongPassword)), will: None, want: Err(Refusal::Credentials(RefuseReason::WrongPassword)), code: Some(0x04), counted: LOGIN_FAILED },
            Case { name: "client id of another identity", client_id: "k2", login: Some(refused(RefuseReason::ClientIdMismatch)), will: None, want: Err(Refusal::Credentials(RefuseReason::ClientIdMismatch)), code: Some(0x02), counted: Some(Counted::Refused(metrics::Refusal::ClientId)) },
            Case { name: "client id reserved to the gateway", client_id: "kiosk-gateway", login: Some(refused(RefuseReason::ReservedClientId)), will: None, want: Err(Refusal::Credentials(RefuseReason::ReservedClientId)), code: Some(0x02), counted: Some(Counted::Refused(metrics::Refusal::ClientId)) },
            Case { name: "wrong password, whatever the will", client_id: "k1", login: Some(refused(RefuseReason::WrongPassword)), will: Some(b"#"), want: Err(Refusal::Credentials(RefuseReason::WrongPassword)), code: Some(0x04), counted: LOGIN_FAILED },
            Case { name: "last will on another kiosk's topic", client_id: "k1", login: Some(ACCEPTED), will: Some(b"kiosk/k2/status"), want: will("kiosk/k2/status"), code: Some(0x05), counted: Some(Counted::AclDenied(AclAction::Will)) },
            Case { name: "last will with a wildcard", client_id: "k1", login: Some(ACCEPTED), will: Some(b"kiosk/+/status"), want: will("kiosk/+/status"), code: Some(0x05), counted: Some(Counted::AclDenied(AclAction::Will)) },
            Case { name: "last will topic not UTF-8", client_id: "k1", login: Some(ACCEPTED), will: Some(b"kiosk/k1/\xff"), want: will("kiosk/k1/\u{fffd}"), code: Some(0x05), counted: Some(Counted::AclDenied(AclAction::Will)) },
            Case { name: "user added during the check", client_id: "k1", login: Some(LoginCheck::Checked { outcome: AuthOutcome::Accepted { role: Role::Kiosk }, fingerprint: None }), will: None, want: Err(Refusal::Reloaded), code: Some(0x03), counted: LOGIN_FAILED },
        ];
        cases
    }

    #[test]
    fn admission_table() {
        let acl = Acl::default_policy();
        let mut failed = Vec::new();
        for case in cases() {
            let attempt = Attempt {
                client_id: case.client_id,
                login: case.login.map(|check| ("k1", check)),
                will_topic: case.will,
            };
            let got = admit(&attempt, &acl);
            let code = got.as_ref().err().map(Refusal::return_code);
            let counted = got.as_ref().err().map(Refusal::counted);
            if (&got, code, counted) != (&case.want, case.code, case.counted) {
                failed.push(format!(
                    "{}: got {got:?} (code {code:?}, {counted:?}), want {:?} (code {:?}, {:?})",
                    case.name, case.want, case.code, case.counted
                ));
            }
        }
        assert!(failed.is_empty(), "failing cases:\n{}", failed.join("\n"));
    }

    /// The codes are those rumqttd's encoder sent for the
    /// `ConnectReturnCode` each refusal used before.
    #[test]
    fn return_codes_match_rumqttds_encoding() {
        let cases = [
            (
                Refusal::ProtocolVersion,
                ConnectReturnCode::RefusedProtocolVersion,
            ),
            (Refusal::NoLogin, ConnectReturnCode::NotAuthorized),
            (Refusal::Throttled, ConnectReturnCode::NotAuthorized),
            (
                Refusal::Credentials(RefuseReason::UnknownUser),
                ConnectReturnCode::BadUserNamePassword,
            ),
            (
                Refusal::Credentials(RefuseReason::WrongPassword),
                ConnectReturnCode::BadUserNamePassword,
            ),
            (
                Refusal::Credentials(RefuseReason::ClientIdMismatch),
                ConnectReturnCode::ClientIdentifierNotValid,
            ),
            (
                Refusal::Credentials(RefuseReason::ReservedClientId),
                ConnectReturnCode::ClientIdentifierNotValid,
            ),
            (
                Refusal::Will { topic: "x".into() },
                ConnectReturnCode::NotAuthorized,
            ),
            (Refusal::Reloaded, ConnectReturnCode::ServiceUnavailable),
            (Refusal::Upstream, ConnectReturnCode::ServiceUnavailable),
        ];
        for (refusal, code) in cases {
            let mut rumqttd = BytesMut::new();
            let connack = ConnAck {
                session_present: false,
                code,
            };
            V4.write(Packet::ConnAck(connack, None), &mut rumqttd)
                .unwrap();
            assert_eq!(
                super::super::connect::connack(refusal.return_code()),
                rumqttd[..],
                "{refusal}"
            );
        }
    }
}
