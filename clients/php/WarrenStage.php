<?php
/**
 * A warren `exec` stage in PHP: a handler is one function.
 *
 *     require __DIR__ . '/WarrenStage.php';
 *
 *     Warren\Stage::run(function (array $body, Warren\Context $ctx): void {
 *         if (empty($body['photo'])) {
 *             throw new Warren\Dead('no photo');        // dead-letter it
 *         }
 *         $ctx->emit(['status' => tweet_for($body)]);   // to every output
 *         // returning is "done"; any other exception retries it
 *     });
 *
 * warren starts the program and writes one JSON line per message on its
 * stdin; this file reads them, calls the handler, and writes the answers
 * (`emit`, `done`, `retry`, `dead`) on stdout, as DESIGN.md's *exec stages*
 * says. Messages are handled one at a time, in the order they arrive (PHP
 * has no threads): with `concurrency: N` warren hands over up to N messages
 * and they wait in the pipe, which keeps the process busy while warren
 * confirms what the previous one emitted; for more at once, more workers
 * with `scale`. Whatever the handler
 * echoes goes to stderr, which warren logs; stdout belongs to the protocol.
 * When warren closes stdin (the worker drains), the program exits 0.
 *
 * One file, no dependencies, PHP 8.1 or later.
 */

declare(strict_types=1);

namespace Warren;

/** The message can never succeed: it goes to the dead-letter queue. */
class Dead extends \Exception
{
}

/** Try the message again later: after at least `$after` seconds when given,
 *  else after the stage's backoff. */
class Retry extends \Exception
{
    public function __construct(string $reason, public readonly ?float $after = null)
    {
        parent::__construct($reason);
    }
}

/** What a handler gets besides the message body. */
final class Context
{
    public readonly string $id;
    public readonly string $job;
    public readonly string $stage;
    public readonly int $attempt;
    private readonly float $deadline;

    /** @param resource $out */
    public function __construct(array $message, private $out)
    {
        $this->id = (string) $message['id'];
        $this->job = (string) ($message['job'] ?? $this->id);
        $this->stage = (string) ($message['stage'] ?? '');
        $this->attempt = (int) ($message['attempt'] ?? 1);
        $this->deadline = microtime(true) + ((int) ($message['deadline_ms'] ?? 0)) / 1000;
    }

    /** Emits `$body` to every output of the stage, or to the output `$to`.
     *  It is published (and confirmed) before the message is acknowledged. */
    public function emit(mixed $body, ?string $to = null): void
    {
        $answer = ['id' => $this->id, 'emit' => $body];
        if ($to !== null) {
            $answer['to'] = $to;
        }
        Stage::answer($this->out, $answer);
    }

    /** Emits `$body` to one output of the stage. */
    public function emitTo(string $to, mixed $body): void
    {
        $this->emit($body, $to);
    }

    /** Seconds before warren gives up on this message. */
    public function secondsLeft(): float
    {
        return max(0.0, $this->deadline - microtime(true));
    }
}

final class Stage
{
    /** Serves `$handler(array $body, Context $ctx)` until warren closes stdin. */
    public static function run(callable $handler): void
    {
        $out = fopen('php://stdout', 'wb');
        // echo and print in a handler must not break the protocol.
        ob_start(static function (string $buffer): string {
            fwrite(STDERR, $buffer);
            return '';
        }, 1);
        while (($line = fgets(STDIN)) !== false) {
            if (trim($line) === '') {
                continue;
            }
            $message = json_decode($line, true, 512, JSON_THROW_ON_ERROR);
            $ctx = new Context($message, $out);
            try {
                $handler($message['body'], $ctx);
                $answer = ['id' => $ctx->id, 'done' => true];
            } catch (Dead $dead) {
                $answer = ['id' => $ctx->id, 'dead' => $dead->getMessage() ?: 'dead'];
            } catch (Retry $retry) {
                $answer = ['id' => $ctx->id, 'retry' => $retry->getMessage() ?: 'retry'];
                if ($retry->after !== null) {
                    $answer['after'] = max(0, (int) round($retry->after * 1000)) . 'ms';
                }
            } catch (\Throwable $error) {
                fwrite(STDERR, (string) $error . "\n");
                $answer = ['id' => $ctx->id, 'retry' => get_class($error) . ': ' . $error->getMessage()];
            }
            self::answer($out, $answer);
        }
        ob_end_flush();
    }

    /** @internal One answer line on the protocol's stdout. */
    public static function answer($out, array $answer): void
    {
        fwrite($out, json_encode($answer, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR) . "\n");
        fflush($out);
    }
}
