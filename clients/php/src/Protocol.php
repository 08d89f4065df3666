<?php

declare(strict_types=1);

namespace Warren;

/** @internal The exec protocol's lines (DESIGN.md, *exec stages*), pure. */
final class Protocol
{
    public const FLAGS = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION;

    /** `$body` as compact JSON, or NotJson saying what could not be written. */
    public static function json(mixed $body, string $what): string
    {
        $text = json_encode($body, self::FLAGS);
        if ($text === false) {
            $type = get_debug_type($body);
            throw new NotJson("$what ($type) is not JSON: " . json_last_error_msg());
        }
        return $text;
    }

    public static function quote(string $text): string
    {
        $json = json_encode($text, self::FLAGS | JSON_INVALID_UTF8_SUBSTITUTE);
        return $json === false ? '""' : $json;
    }

    public static function emit(string $id, string $body, ?string $to): string
    {
        return $to === null
            ? "{\"id\":$id,\"emit\":$body}\n"
            : "{\"id\":$id,\"emit\":$body,\"to\":" . self::quote($to) . "}\n";
    }

    public static function done(string $id): string
    {
        return "{\"id\":$id,\"done\":true}\n";
    }

    public static function progress(string $id, float $fraction, ?string $note): string
    {
        $line = "{\"id\":$id,\"progress\":" . json_encode($fraction, JSON_PRESERVE_ZERO_FRACTION);
        return $line . ($note === null ? '' : ',"note":' . self::quote($note)) . "}\n";
    }

    /** The last answer about a message whose handler threw `$error`. */
    public static function failure(string $id, \Throwable $error, string $stage): string
    {
        if ($error instanceof Dead) {
            return "{\"id\":$id,\"dead\":" . self::quote($error->reason) . "}\n";
        }
        if ($error instanceof Retry) {
            $after = $error->after === null ? '' : ',"after":"' . (int) round($error->after * 1000) . 'ms"';
            return "{\"id\":$id,\"retry\":" . self::quote($error->reason) . "$after}\n";
        }
        return "{\"id\":$id,\"retry\":" . self::quote(self::describe($error, $stage)) . "}\n";
    }

    /** One line about an error a handler threw: its class, its message, and
     *  the place in the user's code it came from. */
    public static function describe(\Throwable $error, string $stage): string
    {
        $text = get_class($error) . ($error->getMessage() !== '' ? ': ' . $error->getMessage() : '');
        $place = null;
        foreach (array_merge([['file' => $error->getFile(), 'line' => $error->getLine()]], $error->getTrace()) as $frame) {
            if (($frame['class'] ?? '') === Handling::class) {
                break; // past the handler: the helper's own frames
            }
            if (isset($frame['file']) && dirname($frame['file']) !== __DIR__) {
                $place = basename($frame['file']) . ':' . ($frame['line'] ?? 0);
                break;
            }
        }
        $where = ($stage !== '' ? " of stage `$stage`" : '') . ($place !== null ? " at $place" : '');
        return str_replace(["\r", "\n"], ' ', $text) . " (in the handler$where)";
    }
}
