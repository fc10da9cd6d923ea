use super::*;
use std::sync::Arc;

#[tokio::test]
async fn a_reader_waits_while_its_consumer_is_behind() {
    let credit = Arc::new(Credit::new(10));
    credit.take(9);
    tokio::time::timeout(Duration::from_millis(50), credit.wait_for_room())
        .await
        .expect("room below the limit");
    credit.take(1);
    let waiting = tokio::spawn({
        let credit = credit.clone();
        async move { credit.wait_for_room().await }
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
async fn a_consumer_that_never_answers_is_forgotten() {
    let credit = Credit::new(1);
    credit.take(3);
    credit.wait_for_room().await;
    assert_eq!(credit.outstanding(), 0);
}
