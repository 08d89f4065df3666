<?php

declare(strict_types=1);

namespace Warren;

/** Run a handler in a test (PHPUnit or any), without warren or a broker:
 *
 *      $result = Warren\Testing::run($compose, ['photo_id' => 7, 'user' => 'ann']);
 *      $this->assertTrue($result->isDone());
 *      $this->assertSame([['photo_id' => 7, ...]], $result->emitted);
 *
 *  The message goes through the same code as in the real worker (the body
 *  is encoded and decoded as JSON on the way in, the answers written as
 *  protocol lines and read back), so a result here is what warren would
 *  see. A failure's trace is written on stderr, as in the log. */
final class Testing
{
    /** Handles one message `$body` with `$handler` (a callable, or a
     *  `Worker`, which picks the handler of `$stage`). */
    public static function run(callable|Worker $handler, mixed $body, ?string $stage = null, int $attempt = 1, string $id = 'test.0', ?string $job = null, int $deadlineMs = 30000): Result
    {
        if ($handler instanceof Worker) {
            if ($stage === null) {
                throw new \InvalidArgumentException('Testing::run($worker, $body) needs $stage to pick the handler');
            }
            $handler = $handler->handlerFor($stage);
        }
        $message = json_decode(json_encode([
            'id' => $id, 'job' => $job ?? explode('.', $id)[0], 'stage' => $stage ?? '',
            'attempt' => $attempt, 'deadline_ms' => $deadlineMs, 'body' => $body,
        ], Protocol::FLAGS | JSON_THROW_ON_ERROR), true, 10000, JSON_THROW_ON_ERROR);
        $written = [];
        $out = static function (string $lines) use (&$written): void {
            $written[] = $lines;
        };
        $written[] = Handling::handle($handler, $message, $out, true);
        return new Result(array_values(array_filter(explode("\n", implode('', $written)), 'strlen')));
    }
}
