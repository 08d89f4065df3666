<?php
// The `compose` stage of twitpic: turns a new photo into the text of its
// tweet. An exec stage: warren runs this program and hands it the jobs.
require __DIR__ . '/../../clients/php/WarrenStage.php';

(new Warren\Worker())->stage('compose', function (array $photo, Warren\Context $ctx): array {
    if (empty($photo['photo_id']) || empty($photo['user'])) {
        throw new Warren\Dead('a photo job needs photo_id and user');
    }
    $caption = trim((string) ($photo['caption'] ?? ''));
    $link = "https://twitpic.example/{$photo['photo_id']}";
    $text = $caption === ''
        ? "@{$photo['user']} posted a photo: $link"
        : mb_strimwidth("@{$photo['user']}: $caption", 0, 250, '...') . " $link";
    return ['photo_id' => $photo['photo_id'], 'user' => $photo['user'], 'text' => $text];   // emitted to `post`
})->serve();
