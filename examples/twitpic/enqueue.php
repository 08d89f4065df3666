<?php
// The photo site: after each upload it enqueues a "post this photo's tweet"
// job with php-amqplib (no message id, as most apps publish) and goes on.
//
//     php examples/twitpic/enqueue.php [COUNT]
//
// It publishes to the pipeline's exchange `twitpic` with routing key
// `compose` (DESIGN.md's names), persistent, with publisher confirms, and
// prints how long the site waited per job.
require_once '/usr/share/php/PhpAmqpLib/autoload.php';

use PhpAmqpLib\Connection\AMQPStreamConnection;
use PhpAmqpLib\Message\AMQPMessage;

$count = (int) ($argv[1] ?? 200);
$url = parse_url(getenv('AMQP_URL') ?: 'amqp://guest:guest@127.0.0.1:5672/%2f');
$connection = new AMQPStreamConnection(
    $url['host'] ?? '127.0.0.1',
    $url['port'] ?? 5672,
    urldecode($url['user'] ?? 'guest'),
    urldecode($url['pass'] ?? 'guest'),
    urldecode(ltrim($url['path'] ?? '/', '/')) ?: '/'
);
$channel = $connection->channel();
$channel->confirm_select();
$started = microtime(true);
for ($i = 1; $i <= $count; $i++) {
    $job = ['photo_id' => sprintf('p%05d', $i), 'user' => 'user' . ($i % 37), 'caption' => "Sunset number $i"];
    $channel->basic_publish(
        new AMQPMessage(json_encode($job), ['content_type' => 'application/json', 'delivery_mode' => 2]),
        'twitpic',
        'compose'
    );
    $channel->wait_for_pending_acks(5.0);
}
$took = microtime(true) - $started;
printf("enqueued %d jobs in %.2fs (%.2f ms each, confirmed by the broker)\n", $count, $took, 1000 * $took / $count);
$channel->close();
$connection->close();
