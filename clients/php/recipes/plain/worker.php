<?php
// A plain script as an exec stage's program: `exec: [php, worker.php]`.
// Two stages in one program; echo and subprocesses go to warren's log.

declare(strict_types=1);

require getenv('WARREN_PHP_AUTOLOAD') ?: __DIR__ . '/../../vendor/autoload.php';

use Warren\{Context, Dead, Worker};

(new Worker())
    ->stage('resize', function (array $photo, Context $ctx): array {
        if (!isset($photo['width'])) {
            throw new Dead('no width');
        }
        system('echo resizing ' . (int) $photo['width']);  // to the log
        return ['photo' => $photo['photo'], 'width' => intdiv($photo['width'], 2)];
    })
    ->stage('caption', fn (array $photo, Context $ctx) => [
        'photo' => $photo['photo'],
        'caption' => "{$photo['photo']}, {$photo['width']}px wide",
    ])
    ->serve();
