//! A periodic check for a task that is woken often for other reasons: a connection's task,
//! woken by every read and write, that must also notice a timeout.
//!
//! A `Sleep` polled on every wake would only register the same waker again (some 300
//! instructions a request; benches/load/FINDINGS.md, "The floor"). The ticker is polled once
//! when set and then only looked at (`Sleep::is_elapsed`, one load) until it has fired.
//!
//! That poll is made outside tokio's cooperative budget. A poll refused for want of budget
//! returns `Pending` without registering the waker, and as the ticker is not polled again
//! until it has fired, it would then never fire for this task: a connection past its timeout
//! would stay open.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Context;
use std::time::{Duration, Instant};

use tokio::time::Sleep;

pub struct Ticker<'a> {
    sleep: Pin<&'a mut Sleep>,
    period: Duration,
    /// Set (reset and polled) and not yet fired.
    armed: bool,
}

impl<'a> Ticker<'a> {
    /// A ticker of `period` on `sleep` (any deadline: it is reset before it is first used).
    pub fn new(sleep: Pin<&'a mut Sleep>, period: Duration) -> Self {
        Self {
            sleep,
            period,
            armed: false,
        }
    }

    /// When the ticker has fired since it was last set: the time now, with the ticker set
    /// again for one period later. If it was not set, it is set now (with `cx`'s waker) and
    /// `None` is returned, as it is while it waits.
    pub fn tick(&mut self, cx: &mut Context<'_>) -> Option<Instant> {
        if self.armed && !self.sleep.is_elapsed() {
            return None;
        }
        let fired = self.armed;
        let now = Instant::now();
        let mut at = now;
        loop {
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(at) + self.period);
            // Fired at once only if the clock jumped past the new deadline: set it again.
            if pin!(tokio::task::unconstrained(self.sleep.as_mut()))
                .poll(cx)
                .is_pending()
            {
                break;
            }
            at = Instant::now();
        }
        self.armed = true;
        fired.then_some(now)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use super::*;

    /// Set in a poll whose cooperative budget is spent, the ticker still fires for its task.
    #[tokio::test]
    async fn a_ticker_set_with_the_budget_spent_still_fires() {
        let period = Duration::from_millis(20);
        let task = tokio::spawn(async move {
            let sleep = pin!(tokio::time::sleep(period));
            let mut ticker = Ticker::new(sleep, period);
            let mut spent = false;
            poll_fn(|cx| {
                if !spent {
                    // Spend the budget of this poll, as a busy connection's I/O can.
                    while pin!(tokio::task::consume_budget()).poll(cx).is_ready() {}
                    spent = true;
                }
                match ticker.tick(cx) {
                    Some(_) => Poll::Ready(()),
                    None => Poll::Pending,
                }
            })
            .await;
        });
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the ticker never fired")
            .unwrap();
    }
}
