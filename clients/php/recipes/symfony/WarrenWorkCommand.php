<?php
// The Symfony recipe: `php bin/console app:warren-work` as an exec stage's
// program (src/Command/WarrenWorkCommand.php). The stages are services
// (autowired); the kernel booted before execute().
//
//     stages:
//       invoice:
//         exec: [php, bin/console, app:warren-work, --no-debug]
//         env: { APP_ENV: prod }

declare(strict_types=1);

namespace App\Command;

use App\Stages\InvoiceStage;
use Symfony\Component\Console\Attribute\AsCommand;
use Symfony\Component\Console\Command\Command;
use Symfony\Component\Console\Input\InputInterface;
use Symfony\Component\Console\Output\OutputInterface;
use Warren\{Context, Worker};

#[AsCommand(name: 'app:warren-work', description: "Serve this app's warren stages")]
final class WarrenWorkCommand extends Command
{
    public function __construct(private readonly InvoiceStage $invoice)
    {
        parent::__construct();
    }

    protected function execute(InputInterface $input, OutputInterface $output): int
    {
        // Write nothing before serve(): until then stdout is the protocol.
        // In a handler, $output (php://stdout) goes to warren's log.
        (new Worker())
            ->stage('invoice', function (array $body, Context $ctx) use ($output): array {
                $output->writeln('invoicing order ' . ($body['order'] ?? '(none)'));
                return ($this->invoice)($body, $ctx);
            })
            ->serve();
        return Command::SUCCESS;
    }
}
