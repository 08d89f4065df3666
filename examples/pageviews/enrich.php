<?php
// The `enrich` stage of pageviews: what the warehouse wants to group by,
// from a raw page view. An exec stage with the packaged helper (clients/php):
// the returned array is emitted to `store`.
require __DIR__ . '/../../clients/php/WarrenStage.php';

use Warren\{Context, Dead, Worker};

/** The first name of `$rules` (regex => name) whose pattern matches `$ua`. */
function first_match(string $ua, array $rules, string $otherwise): string
{
    foreach ($rules as $pattern => $name) {
        if (preg_match($pattern, $ua)) {
            return $name;
        }
    }
    return $otherwise;
}

const BROWSERS = [
    '/Edg\//' => 'Edge', '/OPR\//' => 'Opera', '/Firefox\//' => 'Firefox',
    '/Chrome\//' => 'Chrome', '/Safari\//' => 'Safari', '/bot|crawl|spider/i' => 'bot',
    '/curl\//' => 'curl',
];
const SYSTEMS = [
    '/Android/' => 'Android', '/iPhone|iPad|iOS/' => 'iOS', '/Windows/' => 'Windows',
    '/Mac OS X|Macintosh/' => 'macOS', '/Linux/' => 'Linux',
];
const DEVICES = ['/iPad|Tablet/' => 'tablet', '/Mobile|iPhone|Android/' => 'mobile', '/bot|crawl|spider/i' => 'bot'];

(new Worker())->stage('enrich', function (array $view, Context $ctx): array {
    if (!is_string($view['url'] ?? null) || !is_int($view['ts'] ?? null)) {
        throw new Dead('a page view needs url (text) and ts (milliseconds since the epoch)');
    }
    $ua = (string) ($view['ua'] ?? '');
    return $view + [
        'browser' => first_match($ua, BROWSERS, 'other'),
        'os' => first_match($ua, SYSTEMS, 'other'),
        'device' => first_match($ua, DEVICES, 'desktop'),
        'minute' => gmdate('Y-m-d\TH:i:00\Z', intdiv($view['ts'], 1000)),
    ];
})->serve();
