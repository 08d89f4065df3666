<?php
// The Symfony recipe without Symfony: what `bin/console app:warren-work`
// does once the kernel booted: the console output stream is open already
// (Symfony's ConsoleOutput opens php://stdout before execute()), the same
// InvoiceStage service is served, and the handler writes a line on that
// output (which must reach warren's log, not the protocol). The recipe's
// test runs this.

declare(strict_types=1);

require getenv('WARREN_PHP_AUTOLOAD') ?: __DIR__ . '/../../WarrenStage.php';
require __DIR__ . '/../laravel/InvoiceStage.php';

$output = fopen('php://stdout', 'w');   // ConsoleOutput, opened by the kernel
$invoice = new App\Stages\InvoiceStage();

(new Warren\Worker())
    ->stage('invoice', function (array $body, Warren\Context $ctx) use ($invoice, $output): array {
        fwrite($output, "invoicing order " . json_encode($body['order'] ?? null) . "\n");   // $output->writeln()
        return $invoice($body, $ctx);
    })
    ->serve();
