use super::*;
use std::sync::Arc;

#[tokio::test]
async fn a_reader_waits_while_its_consumer_is_behind() {
    let credit = Arc::new(Credit::new(10));
    credit.take(9);
    tokio::time::timeout(Duration::from_millis(50), credit.wait_for_room(|| true))
        .await
        .expect("room below the limit");
    credit.take(1);
    let waiting = tokio::spawn({
        let credit = credit.clone();
        async move { credit.wait_for_room(|| true).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "must wait at the limit");
    credit.give_back(1);
    tokio::time::timeout(Duration::from_millis(500), waiting)
        .await
        .expect("woken by the acknowledgement")
        .expect("the waiting task ended without a panic");
    assert_eq!(credit.outstanding(), 9);
}

#[tokio::test(start_paused = true)]
async fn a_dead_consumer_is_forgotten() {
    let credit = Credit::new(1);
    credit.take(3);
    credit.wait_for_room(|| false).await;
    assert_eq!(credit.outstanding(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_live_consumer_is_waited_for_however_slow() {
    let credit = Arc::new(Credit::new(1));
    credit.take(3);
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let waiting = tokio::spawn({
        let (credit, asked) = (credit.clone(), asked.clone());
        async move {
            let alive = || asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 100;
            credit.wait_for_room(alive).await
        }
    });
    tokio::time::sleep(STALL * 3 + Duration::from_millis(1)).await;
    assert!(!waiting.is_finished(), "a live consumer is not forgotten");
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(credit.outstanding(), 3);
    credit.give_back(3);
    waiting.await.expect("woken by the acknowledgement");
}
