<?php
// The Laravel recipe: `php artisan warren:work` as an exec stage's program
// (app/Console/Commands/WarrenWork.php).
//
//     stages:
//       invoice:
//         exec: [php, artisan, warren:work]
//         concurrency: 4      # handed over at once; PHP handles them in turn
//         scale: { max: 4 }   # more processes for more at once
//
// Laravel boots (config, container, database) before handle(); serve()
// runs until warren closes stdin. Anything the app logs to stdout or
// echoes goes to warren's log. Long-running: reset what must not carry
// from one message to the next (e.g. DB::disconnect() after an error);
// `exec: { max_messages: 1000 }` recycles the process (see DESIGN.md).

declare(strict_types=1);

namespace App\Console\Commands;

use App\Stages\InvoiceStage;
use Illuminate\Console\Command;
use Warren\Worker;

final class WarrenWork extends Command
{
    protected $signature = 'warren:work';
    protected $description = "Serve this app's warren stages (an exec stage's program)";

    public function handle(): int
    {
        (new Worker())
            ->stage('invoice', $this->laravel->make(InvoiceStage::class))
            ->serve();
        return self::SUCCESS;
    }
}
