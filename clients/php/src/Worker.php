<?php

declare(strict_types=1);

namespace Warren;

/** The program side of an exec stage: handlers by stage, served one
 *  message at a time until warren closes stdin.
 *
 *      $worker = new Warren\Worker();
 *      $worker->stage('lookup', fn (array $body, Warren\Context $ctx) => [...]);
 *      $worker->serve();
 *
 *  PHP handles one message at a time: `concurrency: N` lets warren hand
 *  over N that wait in the pipe; for more at once, more processes
 *  (`scale`). */
final class Worker
{
    /** @var array<string, callable> */
    private array $handlers = [];
    /** @var callable|null */
    private $default = null;

    /** `$handler(array $body, Context $ctx)` handles the messages of stage
     *  `$name`; returns the worker, for chaining. */
    public function stage(string $name, callable $handler): self
    {
        if ($name === '') {
            throw new \InvalidArgumentException('stage() takes the stage name as in the pipeline file');
        }
        if (isset($this->handlers[$name])) {
            throw new \LogicException("stage `$name` has two handlers");
        }
        $this->handlers[$name] = $handler;
        return $this;
    }

    /** `$handler` handles the messages of every stage without a handler of
     *  its own. */
    public function default(callable $handler): self
    {
        $this->default = $handler;
        return $this;
    }

    public function handlerFor(string $stage): ?callable
    {
        return $this->handlers[$stage] ?? $this->default;
    }

    /** @return string[] the stages with a handler of their own */
    public function stages(): array
    {
        return array_keys($this->handlers);
    }

    /** Serves messages until warren closes stdin. */
    public function serve(): void
    {
        if ($this->handlers === [] && $this->default === null) {
            throw new \LogicException('no handler: register one with $worker->stage(NAME, fn) before serve()');
        }
        $serving = (string) getenv('WARREN_STAGE');
        if ($serving !== '' && $this->handlerFor($serving) === null) {
            fwrite(STDERR, "warren: this program has no handler for stage `$serving` (it has: " . implode(', ', $this->stages()) . ")\n");
        }
        $progress = in_array('progress', explode(',', (string) getenv('WARREN_EXEC_FEATURES')), true);
        $protocol = self::protocolStream();
        $out = static function (string $lines) use ($protocol): void {
            self::write($protocol, $lines);
        };
        $answers = '';
        while (($line = fgets(STDIN)) !== false) {
            if (trim($line) === '') {
                continue;
            }
            try {
                $message = json_decode($line, true, 10000, JSON_THROW_ON_ERROR);
                if (($message['cancel'] ?? null) === true) {
                    // The job of a message handed over earlier was
                    // cancelled. Handlers run one at a time here, so that
                    // message is answered already: nothing to do.
                    continue;
                }
                $message['id'];
                $message['body'];
            } catch (\Throwable $error) {
                fwrite(STDERR, 'warren: a line on stdin is not a warren message (' . $error->getMessage() . '): ' . substr($line, 0, 200) . "\n");
                exit(2);
            }
            $answers .= Handling::handle($this->handlerFor((string) ($message['stage'] ?? '')), $message, $out, $progress);
            // While more messages wait in the input buffer, answers wait
            // too and go out in one write; before blocking for input, all.
            if (strlen($answers) > 65536 || stream_get_meta_data(STDIN)['unread_bytes'] === 0) {
                self::write($protocol, $answers);
                $answers = '';
            }
        }
        self::write($protocol, $answers);
    }

    /**
     * @internal The stream the answers go to. warren reads them on the
     * program's stdout: that descriptor is duplicated for the protocol
     * (`php://fd/1` opens a duplicate), and descriptor 1 is pointed at
     * stderr, so that echo, print, var_dump and subprocesses write to
     * warren's log. With FFI (in php-cli by default) dup2(2, 1) does it,
     * the STDOUT constant keeps working, and so do streams on php://stdout
     * opened before serve() (a console output, a log handler): their
     * descriptors are pointed at stderr too. Without FFI, STDOUT is closed
     * and stderr duplicated into the freed descriptor 1 (writing to the
     * STDOUT constant then throws a TypeError; echo and `php://stdout`
     * opened later work; a stream opened earlier still writes into the
     * protocol). Nothing may be written on stdout before serve() either:
     * warren reads it as the protocol.
     * `WARREN_PROTOCOL_FD`, when warren sets it, names a descriptor of its
     * own for the answers, and stdout is left alone.
     *
     * @return resource
     */
    public static function protocolStream(bool $ffi = true)
    {
        $given = getenv('WARREN_PROTOCOL_FD');
        if ($given !== false && $given !== '') {
            return fopen('php://fd/' . (int) $given, 'wb');
        }
        $earlier = self::sameAsStdout();
        $protocol = fopen('php://fd/1', 'wb');
        if ($ffi && extension_loaded('ffi')) {
            try {
                $libc = \FFI::cdef('int dup2(int oldfd, int newfd);');
                // Descriptor 1, and the duplicates of it opened before
                // (a console output object, a log handler on php://stdout).
                foreach ($earlier as $fd) {
                    $libc->dup2(2, $fd);
                }
                return $protocol;
            } catch (\Throwable) {
                // FFI disabled by ffi.enable: fall back below.
            }
        }
        fclose(STDOUT);
        $GLOBALS['__warren_stdout'] = fopen('php://fd/2', 'wb'); // takes descriptor 1, kept open
        return $protocol;
    }

    /** @return int[] descriptor 1 and any other open on the same pipe or file */
    private static function sameAsStdout(): array
    {
        $target = @readlink('/proc/self/fd/1');
        $fds = [1];
        if ($target === false || !str_starts_with($target, 'pipe:')) {
            return $fds;
        }
        foreach (@scandir('/proc/self/fd') ?: [] as $fd) {
            if (ctype_digit($fd) && (int) $fd > 2 && @readlink("/proc/self/fd/$fd") === $target) {
                $fds[] = (int) $fd;
            }
        }
        return $fds;
    }

    /** @param resource $stream */
    private static function write($stream, string $data): void
    {
        while ($data !== '') {
            $written = fwrite($stream, $data);
            if ($written === false || $written === 0) {
                fwrite(STDERR, "warren: cannot write to warren (it stopped reading); exiting\n");
                exit(1);
            }
            $data = substr($data, $written);
        }
    }
}
