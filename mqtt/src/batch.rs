//! Batched intake: the loop of a task that applies messages in batches so
//! that one flush (and then the acknowledgements) covers many of them.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Waits for one message on `rx`, then takes whatever else is already
/// queued, up to `max` in all, into `buf` (cleared first). Returns false,
/// with `buf` empty, when `shutdown` fires or `rx` is closed and drained:
/// the task should end.
///
/// Cancel safe: a message is either in `buf` or still in `rx`.
pub async fn next_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    max: usize,
    buf: &mut Vec<T>,
    shutdown: &CancellationToken,
) -> bool {
    buf.clear();
    tokio::select! {
        _ = shutdown.cancelled() => false,
        n = rx.recv_many(buf, max.max(1)) => n > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_what_is_queued_up_to_max_and_ends_on_close_or_shutdown() {
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let mut buf = Vec::new();
        for i in 0..5 {
            tx.send(i).await.unwrap();
        }
        assert!(next_batch(&mut rx, 3, &mut buf, &shutdown).await);
        assert_eq!(buf, [0, 1, 2]);
        assert!(next_batch(&mut rx, 3, &mut buf, &shutdown).await);
        assert_eq!(buf, [3, 4]);

        // Waits for the next one.
        let later = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(5).await.unwrap();
        });
        assert!(next_batch(&mut rx, 3, &mut buf, &shutdown).await);
        assert_eq!(buf, [5]);
        later.await.unwrap();

        // The sender is gone.
        assert!(!next_batch(&mut rx, 3, &mut buf, &shutdown).await);
        assert!(buf.is_empty());

        let (_tx, mut rx) = mpsc::channel::<u8>(1);
        shutdown.cancel();
        assert!(!next_batch(&mut rx, 3, &mut buf, &shutdown).await);
    }
}
