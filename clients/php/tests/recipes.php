<?php
/**
 * The recipes of README.md, run through the real warren and broker: the
 * plain-script one as it is, the Symfony one for real (Symfony's Console,
 * from Debian's php-symfony-console, which Debian's composer brings,
 * running the recipe's command: recipes/symfony/console.php), the Laravel
 * one in its plain version (recipes/laravel/plain.php: what the artisan
 * command does once the app booted, with the same stage class).
 */

declare(strict_types=1);

require __DIR__ . '/harness.php';

$recipes = dirname(__DIR__) . '/recipes';
$exec = fn (string $script) => '{ command: [' . PHP_BINARY . ", $recipes/$script], env: { WARREN_PHP_AUTOLOAD: " . getenv('WARREN_PHP_AUTOLOAD') . ' } }';

$p = new Pipeline('', <<<YAML
resize:
  exec: {$exec('plain/worker.php')}
  retry: { attempts: 2, backoff: [100ms] }
  outputs: [caption]
caption:
  exec: {$exec('plain/worker.php')}
  outputs: [out]
out:
  sink: { path: {dir}/out.jsonl }
YAML);
[$code, $said] = $p->run([['photo' => 'cat.jpg', 'width' => 800], ['photo' => 'dog.jpg']]);
check($code === 1, 'plain script: exit 1 for the photo without a width', $said);
check($p->results() === [['photo' => 'cat.jpg', 'caption' => 'cat.jpg, 400px wide']], 'plain script: two stages, one program', $said);
check(str_contains($said, 'resizing 800'), "plain script: a subprocess's output is in the log", $said);
check(str_contains($p->dead('resize'), 'no width'), 'plain script: Dead dead-letters');
$p->close();

foreach (['laravel' => 'laravel/plain.php', 'symfony' => 'symfony/console.php, app:warren-work'] as $framework => $command) {
    $p = new Pipeline('', <<<YAML
invoice:
  exec: {$exec($command)}
  retry: { attempts: 2, backoff: [100ms] }
  outputs: [out]
out:
  sink: { path: {dir}/out.jsonl }
YAML);
    [$code, $said] = $p->run([['order' => 17], ['nothing' => true]]);
    check($code === 1, "$framework: exit 1 for the input without an order", $said);
    check($p->results() === [['order' => 17, 'invoice' => 'INV-17', 'stage' => 'invoice']], "$framework: the stage class served", $said);
    check(str_contains($p->dead('invoice'), 'an invoice needs an order id'), "$framework: Dead dead-letters");
    if ($framework === 'symfony') {
        check(str_contains($said, 'invoicing order 17') && !str_contains($said, 'not the protocol'),
            'symfony: a console output opened before serve() writes to the log', $said);
    }
    $p->close();
}

finish();
