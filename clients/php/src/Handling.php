<?php

declare(strict_types=1);

namespace Warren;

/** @internal One message through its handler: the context, the call, what
 *  it returned or threw, and the lines that say so (its emits, then exactly
 *  one `done`, `retry` or `dead`). The real worker and `Testing::run` both
 *  go through here, so a test sees what warren would. */
final class Handling
{
    /** @param \Closure(string): void $out */
    public static function handle(?callable $handler, array $message, \Closure $out, bool $progress): string
    {
        $ctx = new Context($message, $out, $progress);
        try {
            if ($handler === null) {
                throw new NoHandler("this program has no handler for stage `{$ctx->stage}`");
            }
            $result = $handler($message['body'], $ctx);
            if ($result !== null) {
                self::returned($ctx, $result);
            }
            $error = null;
        } catch (\Throwable $caught) { // any failure is the message's
            $error = $caught;
        }
        $ctx->finished = true;
        if ($error === null) {
            $ctx->lines[] = Protocol::done($ctx->idJson);
            return implode('', $ctx->lines);
        }
        // Its emits are dropped: the retry makes them again, with the same ids.
        if (!$error instanceof Dead && !$error instanceof Retry) {
            fwrite(STDERR, "warren: the handler of stage `{$ctx->stage}` failed on message {$ctx->id} (attempt {$ctx->attempt}):\n$error\n");
        }
        return Protocol::failure($ctx->idJson, $error, $ctx->stage);
    }

    /** Emits what a handler returned: a list (`array_is_list`) or an
     *  iterable emits each item, anything else is one body; an `Emit` names
     *  its output. */
    private static function returned(Context $ctx, mixed $result): void
    {
        if ((is_array($result) && array_is_list($result)) || $result instanceof \Traversable) {
            foreach ($result as $item) {
                self::one($ctx, $item);
            }
        } else {
            self::one($ctx, $result);
        }
    }

    private static function one(Context $ctx, mixed $item): void
    {
        if ($item instanceof Emit) {
            $ctx->emit($item->body, $item->to, 'the body of an Emit returned by the handler');
        } else {
            $ctx->emit($item, null, 'the value returned by the handler');
        }
    }
}
