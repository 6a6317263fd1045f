//! Reading a command's output up to the exec output limit.

use ire_core::OutputBuffer;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads `r` to its end, keeping at most `limit` bytes: the rest is read and dropped, so
/// a command that writes more than the limit is never blocked on a full pipe.
pub(crate) async fn read_capped<R: AsyncRead + Unpin>(
    mut r: R,
    limit: usize,
) -> std::io::Result<OutputBuffer> {
    let mut out = OutputBuffer::new(limit);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(out);
        }
        out.push(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_beyond_the_limit_is_drained_and_counted() {
        let data = vec![7u8; 200_000];
        let out = read_capped(&data[..], 1000).await.unwrap();
        let (kept, dropped) = out.into_parts();
        assert_eq!(kept.len(), 1000);
        assert_eq!(dropped, 199_000);
    }
}
