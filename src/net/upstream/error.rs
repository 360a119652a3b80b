//! What can go wrong on the way to the backend and back, typed, so that the gateway answers
//! each with its own status instead of reading error text.

use std::sync::Arc;
use std::time::Duration;

type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// A call that the backend did not answer with a reply of its own. Cheap to clone.
#[derive(Clone, Debug)]
pub enum UpstreamError {
    /// No connection could be made: the dial, the TLS or the HTTP/2 handshake failed or took
    /// too long. Calls that waited for the same dial share its failure.
    Dial(DialError),
    /// The connection broke, or the backend reset the call's stream.
    Broken(Arc<h2::Error>),
    /// The call's deadline (its `grpc-timeout`) passed before the reply was complete.
    Deadline(Duration),
    /// The reply is larger than the client takes.
    ReplyTooLarge {
        /// The largest reply message taken, in bytes.
        limit: usize,
    },
    /// The reply arrived but is not a valid message of the method's response type; what the
    /// decoder said.
    Undecodable(String),
    /// The request could not be encoded or read (a fault on the calling side).
    Request(SharedError),
}

/// Why a dial failed; cheap to clone, so that every call that waited for the dial gets it.
#[derive(Clone, Debug)]
pub enum DialError {
    /// The dial and its handshakes did not finish within this time.
    TimedOut(Duration),
    /// The dial or a handshake failed.
    Failed(Arc<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dial(DialError::TimedOut(after)) => {
                write!(
                    f,
                    "backend connection failed: no connection within {after:?}"
                )
            }
            Self::Dial(DialError::Failed(e)) => write!(f, "backend connection failed: {e}"),
            Self::Broken(e) => write!(f, "backend connection broken: {e}"),
            Self::Deadline(after) => write!(f, "no reply within the call's deadline of {after:?}"),
            Self::ReplyTooLarge { limit } => {
                write!(f, "the backend's reply is larger than {limit} bytes")
            }
            Self::Undecodable(why) => write!(f, "the backend's reply does not decode: {why}"),
            Self::Request(e) => write!(f, "the request could not be sent: {e}"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Dial(DialError::Failed(e)) => Some(&**e),
            Self::Broken(e) => Some(&**e),
            // A status of the request's own encoding: tonic finds it here and keeps its code.
            Self::Request(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<h2::Error> for UpstreamError {
    fn from(e: h2::Error) -> Self {
        Self::Broken(Arc::new(e))
    }
}

impl UpstreamError {
    /// The `UpstreamError` a failed tonic call carries as its source, if it has one: every
    /// failure made on this side of the connection does; a status the backend sent does not.
    pub(crate) fn of(status: &tonic::Status) -> Option<&UpstreamError> {
        std::error::Error::source(status)?.downcast_ref()
    }

    /// A decoding failure of the reply, as a status that carries this error as its source.
    pub(crate) fn undecodable(status: tonic::Status) -> tonic::Status {
        let mut local = tonic::Status::new(status.code(), status.message().to_string());
        local.set_source(Arc::new(Self::Undecodable(status.message().to_string())));
        local
    }
}
