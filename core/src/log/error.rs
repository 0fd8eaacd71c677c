//! The log's error type. Corruption found on disk is a value of this type,
//! never a panic.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the log.
#[derive(Debug)]
#[non_exhaustive]
pub enum LogError {
    /// An operating-system I/O call failed.
    Io {
        /// What the log was doing.
        context: &'static str,
        /// The file involved, if any.
        path: Option<PathBuf>,
        /// The underlying error.
        source: io::Error,
    },
    /// A segment holds bytes that are not a valid record or header, somewhere
    /// other than the torn tail that recovery truncates by itself. Opening with
    /// `LogConfig { repair: true, .. }` truncates the log at this point.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// `append` was given a global sequence other than `next_seq()`.
    SequenceMismatch {
        /// The sequence the log expected.
        expected: u64,
        /// The sequence the record carried.
        got: u64,
    },
    /// `append` was given a topic sequence not greater than the topic's last one.
    TopicSequenceRegression {
        /// The topic.
        topic_id: u64,
        /// The topic's last stored sequence.
        last: u64,
        /// The sequence the record carried.
        got: u64,
    },
    /// `append` was given a timestamp older than the last record's.
    TimestampRegression {
        /// The last record's timestamp.
        last: u64,
        /// The record's timestamp.
        got: u64,
    },
    /// The record (or its event type) is too large for the configuration.
    RecordTooLarge {
        /// Bytes the record would occupy.
        len: usize,
        /// The most a record may occupy.
        max: usize,
    },
    /// A reader was asked to start beyond the end of the log.
    OutOfRange {
        /// The requested sequence.
        requested: u64,
        /// The next sequence the log will store.
        next: u64,
    },
    /// A sync failed earlier. The state of unsynced pages is unknown, so the
    /// log refuses further appends; reopen it to recover.
    Poisoned,
    /// The configuration is unusable.
    InvalidConfig(&'static str),
}

impl LogError {
    pub(crate) fn io(context: &'static str, path: Option<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            context,
            path,
            source,
        }
    }
    pub(crate) fn corrupt(path: PathBuf, offset: u64, reason: impl Into<String>) -> Self {
        LogError::Corrupt {
            path,
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io {
                context,
                path: Some(p),
                source,
            } => write!(f, "{context} ({}): {source}", p.display()),
            LogError::Io {
                context,
                path: None,
                source,
            } => write!(f, "{context}: {source}"),
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "corrupt log segment {} at offset {offset}: {reason}",
                    path.display()
                )
            }
            LogError::SequenceMismatch { expected, got } => {
                write!(
                    f,
                    "record sequence {got} is not the next sequence {expected}"
                )
            }
            LogError::TopicSequenceRegression {
                topic_id,
                last,
                got,
            } => {
                write!(f, "topic {topic_id}: sequence {got} does not follow {last}")
            }
            LogError::TimestampRegression { last, got } => {
                write!(f, "timestamp {got} is older than {last}")
            }
            LogError::RecordTooLarge { len, max } => {
                write!(f, "record of {len} bytes exceeds {max}")
            }
            LogError::OutOfRange { requested, next } => {
                write!(
                    f,
                    "sequence {requested} is beyond the end of the log (next is {next})"
                )
            }
            LogError::Poisoned => write!(f, "an earlier sync failed; reopen the log"),
            LogError::InvalidConfig(why) => write!(f, "invalid log configuration: {why}"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
